using Forensics.Format;
using Forensics.Recorder.Storage;

namespace Forensics.Cilium;

/// <summary>
/// The live Cilium sources of one recording (`record --from hubble --from tetragon`), each on its own
/// task, writing through one <see cref="RecordingSink"/> into the recording: a recording of their own,
/// or the kernel recording when they run beside this tool's probes.
/// </summary>
public sealed class CiliumSources : IAsyncDisposable
{
    private readonly RecordingSink sink;
    private readonly List<Task> running = [];

    public CiliumSources(IReadOnlyList<LiveEndpoint> endpoints, IRecordingTarget target, string node, Action<LiveSource, long>? onMessage = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        sink = new RecordingSink(target, 8192);
        Sources = [.. endpoints.Select(e =>
        {
            LiveSource? s = null;
            s = new LiveSource(e, sink, node) { OnMessage = onMessage is null ? null : n => onMessage(s!, n) };
            return s;
        })];
    }

    public IReadOnlyList<LiveSource> Sources { get; }

    /// <summary>Checks every source answers; throws <see cref="SourceUnavailableException"/> (one line) for the first that does not.</summary>
    public async Task<IReadOnlyList<string>> CheckAsync(TimeSpan timeout, CancellationToken token)
    {
        var versions = new List<string>();
        foreach (var s in Sources)
            versions.Add(await s.CheckAsync(timeout, token));
        return versions;
    }

    public void Start(CancellationToken token)
    {
        foreach (var s in Sources)
            running.Add(Task.Run(() => s.RunAsync(token), CancellationToken.None));
        // a quiet stream still has its rows written and sealed on time, and the manifest kept current
        running.Add(Task.Run(async () =>
        {
            try
            {
                while (!token.IsCancellationRequested)
                {
                    await Task.Delay(250, token);
                    sink.Tick();
                }
            }
            catch (OperationCanceledException)
            {
            }
        }, CancellationToken.None));
    }

    /// <summary>Waits for the streams (their token cancelled), then writes and seals what they delivered.</summary>
    public async Task StopAsync(string? stopReason)
    {
        try
        {
            await Task.WhenAll(running);
        }
        finally
        {
            sink.Complete(stopReason);
            await sink.DisposeAsync();
        }
    }

    /// <summary>Messages that did not parse, over every live source.</summary>
    public static long Malformed(Manifest m) => (m ?? throw new ArgumentNullException(nameof(m))).Sources.Values.Where(s => s.Kind == "grpc").Sum(s => s.Malformed);

    public ValueTask DisposeAsync() => sink.DisposeAsync();
}
