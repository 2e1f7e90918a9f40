using Forensics.Datapath;
using Forensics.Datapath.Bpf;

namespace Forensics.Recorder;

/// <summary>
/// An embedded BPF object loaded with event options and every program
/// attached by its section (tracepoints): the simplest event source.
/// </summary>
public sealed class ObjectSource : IEventSource
{
    private readonly BpfObject obj;
    private readonly List<BpfLink> links = [];

    public ObjectSource(string embeddedName, EventOptions options, IEnumerable<string>? attach = null)
        : this(BpfObject.OpenEmbedded(embeddedName), options, attach)
    {
    }

    /// <summary>An object read from a file (a benchmark's producer), configured like the embedded ones.</summary>
    public static ObjectSource FromFile(string path, EventOptions options) =>
        new(BpfObject.Open(Path.GetFileNameWithoutExtension(path), File.ReadAllBytes(path)), options, null);

    private ObjectSource(BpfObject opened, EventOptions options, IEnumerable<string>? attach)
    {
        obj = opened;
        try
        {
            EventChannel.Configure(obj, options);
            obj.Load();
            foreach (var p in attach ?? [])
                links.Add(obj.Program(p).Attach());
            EventsMap = obj.Map(EventChannel.EventsMap);
            EmitStatsMap = obj.Map(EventChannel.StatsMap);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string Name => obj.Name;
    public BpfObject Object => obj;
    public BpfMap EventsMap { get; } = null!;
    public BpfMap EmitStatsMap { get; } = null!;

    public void Dispose()
    {
        foreach (var l in links)
            l.Dispose();
        links.Clear();
        obj.Dispose();
    }
}
