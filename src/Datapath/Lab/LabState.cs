using System.Text.Json;

namespace Forensics.Datapath.Lab;

/// <summary>A pod of a running lab: where it lives and how it is wired.</summary>
public sealed class LabEndpoint
{
    public string Pod { get; set; } = "";
    public string Netns { get; set; } = "";
    public string HostLink { get; set; } = "";
    public int Ifindex { get; set; }
    public string Ip { get; set; } = "";

    /// <summary>containerd node: the pod's uid, CRI sandbox id and containers (the first runs the steps).</summary>
    public string? PodUid { get; set; }
    public string? SandboxId { get; set; }
    public List<LabContainer> Containers { get; set; } = [];
}

/// <summary>A CRI container of a containerd lab node's pod.</summary>
public sealed class LabContainer
{
    public string Name { get; set; } = "";
    public string Id { get; set; } = "";
    public string Image { get; set; } = "";

    /// <summary>Runs the pod's listeners (lab serve).</summary>
    public bool Serves { get; set; }
}

/// <summary>A process the lab started (a listener), so that down can end it.</summary>
public sealed class LabProcess
{
    public int Pid { get; set; }
    public ulong StartTime { get; set; }
    public string Netns { get; set; } = "";
    public string What { get; set; } = "";
}

/// <summary>
/// What a lab made, written to /run/forensics/lab/&lt;name&gt;.json before each
/// thing is made (write-ahead), so that <c>down</c> finds everything even after
/// <c>up</c> was killed midway.
/// </summary>
public sealed class LabState
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public string Name { get; set; } = "";
    public string? SourceFile { get; set; }
    /// <summary>creating, ready, or down.</summary>
    public string Phase { get; set; } = "creating";
    public int UpPid { get; set; }
    public ulong UpStartTime { get; set; }
    public DateTime CreatedUtc { get; set; }
    public string NodeNetns { get; set; } = "";
    public string WorldNetns { get; set; } = "";
    public string WorldLink { get; set; } = "";
    public int WorldIfindex { get; set; }
    public List<string> Namespaces { get; set; } = [];
    public List<LabEndpoint> Endpoints { get; set; } = [];
    public List<LabProcess> Processes { get; set; } = [];
    /// <summary>IDs of the BPF programs attached to the lab's interfaces (from BPF_PROG_QUERY), once the datapath is attached.</summary>
    public List<uint> ProgramIds { get; set; } = [];
    public bool DatapathAttached { get; set; }

    /// <summary>What the node is made of: netns (our datapath) or containerd (CRI pods, kube-proxy rules).</summary>
    public string Node { get; set; } = Control.LabNodeKinds.Netns;

    /// <summary>containerd node: its root, state, socket and CNI config live here.</summary>
    public string? ContainerdDir { get; set; }

    /// <summary>containerd node: the CRI endpoint (unix:///...).</summary>
    public string? RuntimeEndpoint => ContainerdDir is null ? null : "unix://" + Path.Combine(ContainerdDir, "containerd.sock");

    /// <summary>The datapath's monitor socket, when the up process serves its events (docs/monitor.md).</summary>
    public string? MonitorSocket { get; set; }

    /// <summary>Where the datapath's state maps are pinned, and the control plane's state beside them.</summary>
    public string? PinDir { get; set; }
    public string? ControlFile { get; set; }

    public static LabState? Read(string name)
    {
        var path = LabNames.StateFile(name);
        try
        {
            return File.Exists(path) ? JsonSerializer.Deserialize<LabState>(File.ReadAllText(path), Json) : null;
        }
        catch (JsonException e)
        {
            throw new LabException($"{path}: unreadable lab state ({e.Message}); remove it after checking `ip netns`");
        }
    }

    /// <summary>
    /// The labs whose datapath is running and served (docs/monitor.md): a state file naming a monitor socket that
    /// exists, written by an up process that is still alive. Ordered by name. Unreadable state files are skipped.
    /// </summary>
    public static IReadOnlyList<LabState> Serving()
    {
        if (!Directory.Exists(LabNames.StateDir))
            return [];
        var found = new List<LabState>();
        foreach (var path in Directory.EnumerateFiles(LabNames.StateDir, "*.json"))
        {
            LabState? s;
            try
            {
                s = JsonSerializer.Deserialize<LabState>(File.ReadAllText(path), Json);
            }
            catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
            {
                continue;
            }
            if (s is { MonitorSocket: { } sock } && s.Phase != "down" && File.Exists(sock) && s.UpAlive())
                found.Add(s);
        }
        return [.. found.OrderBy(s => s.Name, StringComparer.Ordinal)];
    }

    /// <summary>Writes the state atomically (write to a temporary file, fsync, rename).</summary>
    public void Save()
    {
        Directory.CreateDirectory(LabNames.StateDir);
        var path = LabNames.StateFile(Name);
        var tmp = $"{path}.{Environment.ProcessId}.tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            JsonSerializer.Serialize(f, this, Json);
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
    }

    public static void Delete(string name)
    {
        File.Delete(LabNames.StateFile(name));
        File.Delete(LabNames.StateFile(name) + ".tmp");
    }

    /// <summary>The start time of a process (field 22 of /proc/PID/stat), to tell a recycled PID apart; null if it is gone.</summary>
    public static ulong? ProcessStartTime(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            var fields = stat[(close + 2)..].Split(' ');
            return ulong.Parse(fields[19], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    /// <summary>Whether a process is still running: same PID and start time, and not a zombie waiting for its parent to reap it.</summary>
    public static bool Running(int pid, ulong startTime)
    {
        if (ProcessStartTime(pid) is not { } t || (startTime != 0 && t != startTime))
            return false;
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return !stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z');
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Whether the process that ran <c>up</c> is still alive (same PID and start time).</summary>
    public bool UpAlive() => UpPid > 0 && Running(UpPid, UpStartTime);
}
