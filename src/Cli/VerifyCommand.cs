using System.CommandLine;
using System.Globalization;
using Forensics.Format;
using Forensics.Query.Bundles;
using Forensics.Query.Recording;

namespace Forensics.Cli;

/// <summary>
/// <c>forensics verify FILE</c>: exit 0 when the bundle is intact (and, with --key or
/// --allowed-signers, signed by a trusted key); otherwise one line and the exit code of the
/// failure class (<see cref="BundleError"/>, 10..23).
/// </summary>
public static class VerifyCommand
{
    /// <summary>The exit code table printed by <c>verify --help</c> (docs/bundles.md has the same).</summary>
    internal const string ExitCodes = """
        Exit codes: 0 intact; 2 usage; 7 bad input (no such file, unreadable key file);
        10 malformed (not a bundle, bad tar header, padding, order, bytes after the end, a FIFO or device);
        11 truncated; 12 unsafe entry (.., absolute path, link, device, FIFO, directory, pax/GNU header, duplicate);
        13 root mismatch (index.sha256 or --root); 14 file changed; 15 file missing; 16 file added;
        17 file renamed; 18 size exceeded (an entry larger than listed, or over --max-files/--max-extract-size);
        19 manifest invalid (malformed, disagrees with the index, or refused by the readers' checks);
        20 custody broken; 21 signature bad; 22 signature untrusted; 23 unsigned but a trusted key was required.
        """;

    public static Command Build()
    {
        var file = new Argument<string>("bundle") { Description = "a bundle file (.fxb)" };
        var allowed = Vocabulary.InputFile("--allowed-signers", "ssh-keygen allowed_signers file: the signature must be by one of its keys");
        var key = Vocabulary.InputFile("--key", "an SSH public key file (id_ed25519.pub): the signature must be by this key");
        var root = new Option<string?>("--root") { Description = "the root hash the bundle must have (as quoted in the ticket)" };
        root.Validators.Add(r =>
        {
            var v = r.Tokens[0].Value.Trim();
            if (!BundleIndex.IsSha256(v.ToLowerInvariant()))
                r.AddError($"--root: '{v}' is not a SHA-256 (64 hex digits)");
        });
        var limits = new QueryCommands.LimitOptions();
        var cmd = new Command("verify", "Verify a bundle: every file's SHA-256, the root hash, the manifest (with the readers' checks and limits), the custody chain, the signature; exit 0 when intact, else a distinct code per failure class (listed below)")
        {
            file, allowed, key, root,
        };
        limits.AddTo(cmd);
        cmd.SetAction(p => Run(p.GetValue(file)!, new VerifyOptions(p.GetValue(allowed), p.GetValue(key), p.GetValue(root)) { Limits = limits.Limits(p) }));
        return cmd;
    }

    private static int Run(string file, VerifyOptions options)
    {
        if (!File.Exists(file) && RegularFile.Kind(Path.GetFullPath(file)) is null)
            throw new RecordingException($"{file}: no such file");
        var r = BundleReader.Verify(file, options);
        var sig = r.Signature switch
        {
            null => "unsigned",
            { TrustedAs: { } who } => $"signed by {r.Signature.KeyType} {r.Signature.Fingerprint} (trusted: {who})",
            _ => $"signed by {r.Signature.KeyType} {r.Signature.Fingerprint} (not checked against a trusted key: give --key or --allowed-signers)",
        };
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"ok: {file}: recording {r.Index.RecordingId}, {r.Index.Entries.Count} files, {r.DataBytes} bytes, root {r.Root}, {sig}"));
        foreach (var c in r.Custody)
        {
            var what = c.Action == "bundle" ? $"bundled {c.RecordingPath} ({c.RecordingId})" : $"note {BundleIndex.Quote(c.Note ?? "")}";
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  custody {c.Seq}: {c.At:yyyy-MM-ddTHH:mm:ssZ} {c.User} on {c.Host}: {what}"));
        }
        if (r.Manifest["redaction"] is System.Text.Json.Nodes.JsonObject red)
        {
            Console.WriteLine("  redacted: " + string.Join(", ", red.Select(p => p.Key).Where(k => k is not "redacted_at" and not "columns_rewritten")));
        }
        return (int)ExitCode.Ok;
    }
}
