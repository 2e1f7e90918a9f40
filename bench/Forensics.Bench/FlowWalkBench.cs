using System.Diagnostics;
using System.Globalization;
using System.Net;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;

namespace Forensics.Bench;

/// <summary>
/// Issue 18: what a read of the datapath's conntrack map costs the flows table, by map fill: batched reads
/// (BPF_MAP_LOOKUP_BATCH, what the recorder does every second) against key-by-key iteration (get_next_key and a
/// lookup per entry, what the snapshot tables do at start and end). The map of a loaded datapath, filled from user space.
/// </summary>
internal static class FlowWalkBench
{
    public static void Run(IReadOnlyList<int> fills, int repeats)
    {
        var cluster = new ClusterSpec("walk.yaml",
            new LabSpec("fxwalk", IPNetwork.Parse("10.0.0.0/16"), IPNetwork.Parse("10.96.0.0/12"), IPAddress.Parse("192.0.2.1"), [], []), [], [], []);
        using var dp = Datapath.Control.LoadedDatapath.Load(cluster, new EventOptions { RingBytes = 1 << 20 });
        var ct = dp.StateMap("fx_ct");
        var keys = new CtKey[ct.MaxEntries];
        var values = new CtEntry[ct.MaxEntries];
        int filled = 0;
        foreach (var fill in fills.Where(f => f <= ct.MaxEntries))
        {
            for (; filled < fill; filled++)
            {
                var k = new CtKey { Saddr = MapAddress.From(IPAddress.Parse("10.0.0.1")), Daddr = MapAddress.From(IPAddress.Parse("10.0.1.1")), Sport = (ushort)(filled % 60000 + 1), Dport = (ushort)(filled / 60000 + 1), Proto = 6, Dir = Dir.Egress, Family = 2 };
                var v = new CtEntry { CreatedNs = 1, LastNs = 2, Packets = (ulong)filled };
                ct.Update(k, v);
            }
            int n = 0;
            var sw = Stopwatch.StartNew();
            for (int r = 0; r < repeats; r++)
                n = ct.ReadBatched(keys, values);
            double batched = sw.Elapsed.TotalMilliseconds / repeats;
            sw.Restart();
            int m = 0;
            for (int r = 0; r < Math.Min(repeats, 3); r++)
                m = ct.Entries<CtKey, CtEntry>().Count;
            double iterated = sw.Elapsed.TotalMilliseconds / Math.Min(repeats, 3);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"flows-walk entries={fill} read={n} batched_ms={batched:0.00} per_entry_ns={batched * 1e6 / Math.Max(1, n):0} iterated_ms={iterated:0.0} ({m} entries) cpu_share_at_1s_walks={batched / 10:0.00}% load={NetLab.LoadAvg()}"));
        }
    }
}
