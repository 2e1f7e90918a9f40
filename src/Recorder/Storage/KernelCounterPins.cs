using Forensics.Datapath;
using Forensics.Datapath.Bpf;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder.Storage;

/// <summary>
/// The kernel's emission counters of a recording, pinned in bpffs while it records: a recorder killed with
/// SIGKILL loses its programs (they detach when it dies, so the counters stop) but not these maps, and
/// <c>recover</c> reads from them exactly how many events the kernel handed over and could not hand over up to the
/// end, instead of estimating a crash's gap. A recorder that stops removes them; <c>recover</c> removes what a
/// killed one left. One folder per recording, named by its id (a GUID): /sys/fs/bpf/forensics/recordings/ID/OBJECT.
/// </summary>
public static class KernelCounterPins
{
    public const string Root = "/sys/fs/bpf/forensics/recordings";

    /// <summary>The folder of a recording's pins; null for an id that is not a GUID (a manifest from elsewhere).</summary>
    public static string? DirOf(string recordingId) =>
        Guid.TryParseExact(recordingId, "D", out var g) ? Path.Combine(Root, g.ToString("D")) : null;

    /// <summary>Pins every object's fx_emit_stats; false (and nothing left) when bpffs does not take them.</summary>
    public static bool Pin(string dir, IEnumerable<IEventSource> objects)
    {
        ArgumentNullException.ThrowIfNull(dir);
        ArgumentNullException.ThrowIfNull(objects);
        try
        {
            Directory.CreateDirectory(dir);
            foreach (var o in objects)
                o.EmitStatsMap.Pin(Path.Combine(dir, o.Name));
            return true;
        }
        catch (Exception e) when (e is BpfException or IOException or UnauthorizedAccessException)
        {
            Remove(dir);
            return false;
        }
    }

    /// <summary>
    /// Emitted and failed per table, summed over the pinned objects and their CPUs; null when nothing is pinned
    /// for the recording or a pin cannot be read.
    /// </summary>
    public static Dictionary<string, SourceCounts>? Read(string? dir)
    {
        if (dir is null || !Directory.Exists(dir))
            return null;
        var sums = new Dictionary<string, SourceCounts>(StringComparer.Ordinal);
        try
        {
            var pins = Directory.GetFiles(dir);
            if (pins.Length == 0)
                return null;
            foreach (var pin in pins)
            {
                using var map = BpfMap.OpenPinned(pin);
                foreach (var (kind, c) in EventChannel.ReadCounters(map))
                {
                    var table = Rows.TableOf(kind);
                    var s = sums.GetValueOrDefault(table);
                    sums[table] = new SourceCounts(s.Emitted + c.Emitted, s.Failed + c.Failed);
                }
            }
        }
        catch (Exception e) when (e is BpfException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
        return sums;
    }

    /// <summary>Removes a recording's pins (the maps go once nothing else holds them).</summary>
    public static void Remove(string? dir)
    {
        if (dir is null)
            return;
        try
        {
            if (!Directory.Exists(dir))
                return;
            foreach (var pin in Directory.GetFiles(dir))
                File.Delete(pin);
            Directory.Delete(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
