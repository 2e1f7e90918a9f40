using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using Forensics.Cilium.Hubble;
using Forensics.Cilium.Hubble.Api;
using Forensics.Cilium.Tetragon;
using Forensics.Cilium.Tetragon.Api;
using Forensics.Recorder;
using Forensics.Format;
using Forensics.Recorder.Storage;

namespace Forensics.Cilium;

/// <summary>Which tool wrote an export.</summary>
public enum ExportKind
{
    /// <summary>Hubble: `hubble observe -o jsonpb` or `-o json`, Hubble's flow exporter.</summary>
    Hubble,

    /// <summary>Tetragon: its JSON export (tetragon.log), `tetra getevents -o json`.</summary>
    Tetragon,
}

public sealed record ImportSummary(string Directory, ManifestSource Source, IReadOnlyDictionary<string, long> Rows, long Bytes);

/// <summary>
/// `forensics import hubble|tetragon FILE...`: JSON lines (plain, gzip, rotated files in the order given)
/// into a recording with the same tables as a live one, and a manifest naming every input file with
/// its SHA-256. A line that is not an event is counted with its file and line number and the import
/// goes on.
/// </summary>
public static class Importer
{
    /// <summary>Malformed lines kept as examples in the manifest (all are counted).</summary>
    public const int MalformedExamples = 100;

    public static ImportSummary Import(ExportKind kind, IReadOnlyList<string> files, string outputDir, int batchRows = 32768)
    {
        ArgumentNullException.ThrowIfNull(files);
        var manifest = new Manifest
        {
            Node = "",
            Host = Recording.HostInfo(),
            ToolVersion = Recording.ToolVersion(),
            StartedAt = DateTime.UtcNow,
            StopReason = "recording",
            Config = new ManifestConfig { Kinds = kind == ExportKind.Hubble ? ["drop", "policy", "trace", "nat"] : ["exec", "exit", "connect"] },
        };
        var name = kind == ExportKind.Hubble ? "hubble" : "tetragon";
        var nodes = new HashSet<string>(StringComparer.Ordinal);
        var sink = new RecordingSink(new StandaloneTarget(outputDir, manifest), batchRows);
        try
        {
            var stats = sink.Source(name, "file", null);
            var hubble = new FlowDecoder(sink, stats, "unknown");
            var tetragon = new EventDecoder(sink, stats, "unknown");
            foreach (var path in files)
            {
                var input = new ManifestInput { Path = Path.GetFullPath(path) };
                lock (stats)
                    stats.Inputs.Add(input);
                using var raw = Forensics.Datapath.Files.OpenRegular(path); // a FIFO or a device would block or never end
                using var hashing = new HashingStream(raw);
                input.Gzip = IsGzip(raw);
                using var gzip = input.Gzip ? new GZipStream(hashing, CompressionMode.Decompress) : null;
                using var counted = new CountingStream(gzip ?? (Stream)hashing);
                using var reader = new StreamReader(counted, Encoding.UTF8, detectEncodingFromByteOrderMarks: false, 1 << 16);
                long lineNo = 0;
                var unknown = new List<KeyValuePair<string, string>>();
                string? line;
                while ((line = ReadLine(reader, input, ref lineNo, stats, sink)) is not null)
                {
                    if (string.IsNullOrWhiteSpace(line))
                        continue;
                    unknown.Clear();
                    try
                    {
                        if (kind == ExportKind.Hubble)
                        {
                            var ev = ParseHubble(line, unknown);
                            var node = ev.NodeName.Length > 0 ? ev.NodeName : ev.Flow?.NodeName ?? "";
                            nodes.Add(node);
                            hubble.Decode(ev.Flow, ev.LostEvents, ev.NodeStatus, ev.ResponseTypesCase switch
                            {
                                ExportEvent.ResponseTypesOneofCase.AgentEvent => "agent-event",
                                ExportEvent.ResponseTypesOneofCase.DebugEvent => "debug-event",
                                _ => null,
                            }, node, ev.Time, unknown);
                        }
                        else
                        {
                            var ev = UnknownFields.ParseJson<GetEventsResponse>(line, unknown);
                            nodes.Add(ev.NodeName);
                            tetragon.Decode(ev, unknown);
                        }
                    }
                    catch (FormatException e)
                    {
                        Malformed(sink, stats, input.Path, lineNo, e.Message);
                    }
                    sink.Tick();
                }
                if (input.Gzip && !TrailerMatches(raw, counted.Count, out var expected))
                    Malformed(sink, stats, input.Path, lineNo, $"gzip: the file is truncated or damaged ({counted.Count} bytes decompressed, its trailer says {expected}); the lines before this one are imported");
                var sha = hashing.Finish(raw);
                lock (stats)
                {
                    input.Lines = lineNo;
                    input.Bytes = raw.Length;
                    input.Sha256 = sha;
                }
            }
            nodes.Remove("");
            manifest.Node = nodes.Count == 1 ? nodes.First() : nodes.Count == 0 ? "unknown" : "multiple";
            sink.Complete("imported");
            return new ImportSummary(outputDir, stats, manifest.Tables.ToDictionary(t => t.Key, t => t.Value.Rows),
                manifest.Tables.Values.Sum(t => t.Files.Sum(f => f.Bytes)));
        }
        finally
        {
            sink.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    /// <summary>
    /// One line of a Hubble export: an observer.ExportEvent / GetFlowsResponse (jsonpb, the exporter),
    /// or a bare flow (`hubble observe -o json`).
    /// </summary>
    public static ExportEvent ParseHubble(string line, List<KeyValuePair<string, string>> unknown)
    {
        ArgumentNullException.ThrowIfNull(unknown);
        var ev = UnknownFields.ParseJson<ExportEvent>(line, unknown);
        if (ev.ResponseTypesCase == ExportEvent.ResponseTypesOneofCase.None
            && unknown.Any(u => u.Key is "ExportEvent.verdict" or "ExportEvent.IP" or "ExportEvent.source" or "ExportEvent.destination" or "ExportEvent.l4"))
        {
            unknown.Clear();
            var flow = UnknownFields.ParseJson<Flow>(line, unknown);
            for (int i = 0; i < unknown.Count; i++) // the same paths as a wrapped flow's
                unknown[i] = new("ExportEvent.flow" + unknown[i].Key["Flow".Length..], unknown[i].Value);
            return new ExportEvent { Flow = flow, NodeName = flow.NodeName, Time = flow.Time };
        }
        return ev;
    }

    private static string? ReadLine(StreamReader reader, ManifestInput input, ref long lineNo, ManifestSource stats, RecordingSink sink)
    {
        try
        {
            var line = reader.ReadLine();
            if (line is not null)
                lineNo++;
            return line;
        }
        catch (InvalidDataException e) // a damaged or truncated gzip member: what came before it is kept
        {
            Malformed(sink, stats, input.Path, lineNo + 1, "gzip: " + e.Message + " (the rest of the file is unreadable)");
            return null;
        }
    }

    private static void Malformed(RecordingSink sink, ManifestSource stats, string file, long line, string error)
    {
        _ = sink;
        lock (stats)
        {
            stats.Received++;
            stats.Malformed++;
            if (stats.MalformedExamples.Count < MalformedExamples)
                stats.MalformedExamples.Add(new ManifestMalformed { File = file, Line = line, Error = OneLine(error) });
        }
    }

    internal static string OneLine(string s)
    {
        s = s.ReplaceLineEndings(" ");
        return s.Length > 300 ? s[..300] + "..." : s;
    }

    /// <summary>A gzip member ends with its uncompressed size mod 2^32: a truncated file does not match (GZipStream just ends).</summary>
    private static bool TrailerMatches(FileStream raw, long decompressed, out uint expected)
    {
        expected = 0;
        if (raw.Length < 18)
            return false;
        long pos = raw.Position;
        Span<byte> tail = stackalloc byte[4];
        raw.Position = raw.Length - 4;
        raw.ReadExactly(tail);
        raw.Position = pos;
        expected = BitConverter.ToUInt32(tail);
        return expected == (uint)decompressed;
    }

    private sealed class CountingStream(Stream inner) : Stream
    {
        public long Count { get; private set; }

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = inner.Read(buffer, offset, count);
            Count += n;
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => Count; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private static bool IsGzip(FileStream fs)
    {
        Span<byte> magic = stackalloc byte[2];
        int n = fs.Read(magic);
        fs.Position = 0;
        return n == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    }

    /// <summary>Hashes what is read through it; <see cref="Finish"/> hashes what was not read (the tail after a damaged gzip member).</summary>
    private sealed class HashingStream(Stream inner) : Stream
    {
        private readonly IncrementalHash hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public string Finish(FileStream raw)
        {
            var buf = new byte[1 << 16];
            int n;
            while ((n = raw.Read(buf)) > 0)
                hash.AppendData(buf, 0, n);
            return Convert.ToHexStringLower(hash.GetHashAndReset());
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = inner.Read(buffer, offset, count);
            hash.AppendData(buffer, offset, n);
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                hash.Dispose();
            base.Dispose(disposing);
        }
    }
}
