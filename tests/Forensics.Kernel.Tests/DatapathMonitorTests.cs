using System.Diagnostics;
using System.Text.Json;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Monitoring;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// A running datapath served to other processes (issue 21): its events on the lab's monitor socket, its state
/// from the pinned maps and the control plane's file.
/// </summary>
[Collection("lab")]
public class DatapathMonitorTests
{
    private sealed class Drops : IMonitorHandler
    {
        public readonly List<(DropEvent Event, ulong ReceivedNs)> Seen = [];
        public Func<DropEvent, bool> Want = _ => false;
        public readonly CancellationTokenSource Stop = new();

        public void OnEvent(ReadOnlySpan<byte> record)
        {
            if (EventReader.Header(record).Kind != EventKind.Drop)
                return;
            var e = EventReader.Read<DropEvent>(record);
            lock (Seen)
                Seen.Add((e, Monotonic.NowNs()));
            if (Want(e))
                Stop.Cancel();
        }

        public void OnStats(IReadOnlyList<StatsEntry> stats)
        {
        }
    }

    [KernelFact]
    public void LabServing_DeniedConnect_ClientGetsTheDropWithinASecondAndPinnedStateEqualsTheOwners()
    {
        var name = LabFixture.UniqueName();
        var cluster = LabFixture.Load("starwars.yaml", name);
        using (var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath() with { Serve = true, CollectEvents = false }))
        {
            Assert.Equal(LabNames.MonitorSocket(name), lab.State.MonitorSocket);
            if (OperatingSystem.IsLinux())
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(lab.State.MonitorSocket!));
            using var client = MonitorClient.Connect(lab.State.MonitorSocket!, ["drop"], "test", TimeSpan.FromSeconds(10));
            Assert.Equal(name, client.Hello.Lab);
            Assert.Equal(Environment.ProcessId, client.Hello.Pid);
            Assert.Equal(File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim(), client.Hello.BootId);
            var drops = new Drops { Want = e => e.Tuple.Dport == 9090 && e.Reason == 133 };
            var reader = new Thread(() => client.Run(drops, drops.Stop.Token)) { IsBackground = true };
            reader.Start();

            lab.RunStep(cluster.Lab!.Steps.Single(s => s.Name == "frontend-to-backend-allowed")); // an allow entry's hit
            lab.RunStep(cluster.Lab!.Steps.Single(s => s.Name == "frontend-to-backend-port-not-allowed"));

            Assert.True(reader.Join(TimeSpan.FromSeconds(10)), "no drop of the denied connection reached the client");
            (DropEvent Event, ulong ReceivedNs) d;
            lock (drops.Seen)
                d = drops.Seen.First(x => drops.Want(x.Event));
            Assert.Equal(lab.PodIp("backend-2"), EventReader.Destination(d.Event.Tuple));
            // the packet's kernel time to the client's receipt, both CLOCK_MONOTONIC
            Assert.True(d.ReceivedNs - d.Event.Hdr.Ktime < 1_000_000_000UL, $"the drop took {(d.ReceivedNs - d.Event.Hdr.Ktime) / 1e6:F0} ms to arrive");

            // Another process reads the same state from the pinned maps and the control plane's file.
            var own = ((LabDatapath)lab.Datapath!).Datapath.Snapshot();
            var pinned = PinnedDatapath.Snapshot(lab.State.PinDir!, lab.State.ControlFile!);
            Assert.NotEmpty(pinned.Conntrack);
            Assert.Contains(pinned.PolicyEntries, e => e.Hits > 0);
            Assert.Equal(Json(own), Json(pinned));
        }
        Assert.Empty(LabFixture.Leftovers(name));
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { Converters = { new AddressAsText() } };

    private static string Json(DatapathSnapshot s) => JsonSerializer.Serialize(s with { Taken = default }, JsonOptions);

    private sealed class AddressAsText : System.Text.Json.Serialization.JsonConverter<System.Net.IPAddress>
    {
        public override System.Net.IPAddress Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => System.Net.IPAddress.Parse(reader.GetString()!);
        public override void Write(Utf8JsonWriter writer, System.Net.IPAddress value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
    }
}
