using System.Net;
using System.Reflection;
using System.Runtime.InteropServices;
using Forensics.Datapath;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Tests;

namespace Forensics.Bench;

/// <summary>ns per packet through BPF_PROG_TEST_RUN: the full datapath against an empty program and one hash lookup.</summary>
internal static class DatapathCost
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Key
    {
        public uint Saddr, Daddr;
        public ushort Sport, Dport;
        public uint Proto;
    }

    private static PodSpec Pod(string name, string ip, string app) =>
        new(name, "default", new Dictionary<string, string> { ["app"] = app }, IPAddress.Parse(ip));

    /// <summary>Mean ns per run reported by the kernel, over rounds of repeat runs (the ring drained between rounds).</summary>
    private static double Repeat(BpfProgram prog, byte[] pkt, int ifindex, Action drain, int rounds = 20, int repeat = 20000)
    {
        prog.TestRun(pkt, 1000, ifindex: ifindex);
        drain();
        var samples = new List<double>();
        for (int i = 0; i < rounds; i++)
        {
            samples.Add(prog.TestRun(pkt, repeat, ifindex: ifindex).DurationNs);
            drain();
        }
        samples.Sort();
        return samples[samples.Count / 2]; // median of rounds
    }

    public static void Run(string baselineObject)
    {
        var results = new List<(string Name, double Ns)>();
        using (var baseline = BpfObject.Open("baseline", File.ReadAllBytes(baselineObject)))
        {
            baseline.Load();
            var pkt = Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080, Packets.TcpAck);
            var key = new Key
            {
                Saddr = BitConverter.ToUInt32(pkt, 26), Daddr = BitConverter.ToUInt32(pkt, 30),
                Sport = BitConverter.ToUInt16(pkt, 34), Dport = BitConverter.ToUInt16(pkt, 36), Proto = 6,
            };
            baseline.Map("fxb_ct").Update(key, 0UL);
            using var reader = new RingBufferReader(baseline.Map("fxb_events"), _ => { });
            void Drain() => reader.Consume();
            results.Add(("empty (repeat 5000)", Repeat(baseline.Program("fxb_empty"), pkt, 0, Drain, 40, 5000)));
            results.Add(("one-lookup (repeat 5000)", Repeat(baseline.Program("fxb_lookup"), pkt, 0, Drain, 40, 5000)));
            results.Add(("lookup+64B-event (repeat 5000)", Repeat(baseline.Program("fxb_lookup_event"), pkt, 0, Drain, 40, 5000)));
        }

        var front = Pod("frontend-1", "10.244.0.10", "frontend");
        var back = Pod("backend-2", "10.244.0.20", "backend");
        var cluster = new ClusterSpec("bench.yaml",
            new LabSpec("bench", IPNetwork.Parse("10.244.0.0/16"), IPNetwork.Parse("10.96.0.0/12"), IPAddress.Parse("172.16.0.1"), [], []),
            [front, back],
            [new ServiceSpec("backend-service", "default", IPAddress.Parse("10.96.0.100"), new Dictionary<string, string> { ["app"] = "backend" },
                [new ServicePort(80, 8080, "TCP")])],
            [new NetworkPolicySpec("backend-ingress", "default", new EndpointSelector(new Dictionary<string, string> { ["app"] = "backend" }),
                [new PolicyRule([new EndpointSelector(new Dictionary<string, string> { ["app"] = "frontend" })], [], [], [new PortProtocol(8080, "TCP")])],
                [], [], [], "# bench\n")]);
        var links = new List<string>();
        try
        {
            var ifindex = new List<int>();
            for (int i = 0; i < 2; i++)
            {
                var name = $"fxbdp{Environment.ProcessId % 10000}x{i}";
                Sh("ip", "link", "add", name, "type", "veth", "peer", "name", name + "p");
                links.Add(name);
                ifindex.Add(int.Parse(File.ReadAllText($"/sys/class/net/{name}/ifindex").Trim(), System.Globalization.CultureInfo.InvariantCulture));
            }
            var configs = new (string Name, string Dst, ushort Port, EventOptions Options)[]
            {
                ("VIP+DNAT, events on", "10.96.0.100", 80, new EventOptions { Snaplen = 0 }),
                ("VIP+DNAT, events off", "10.96.0.100", 80, new EventOptions { Snaplen = 0, Kinds = new HashSet<Datapath.Abi.EventKind> { Datapath.Abi.EventKind.Exec } }),
                ("pod IP, events on", "10.244.0.20", 8080, new EventOptions { Snaplen = 0 }),
                ("pod IP, events on, monitor aggregation medium", "10.244.0.20", 8080, new EventOptions { Snaplen = 0, MonitorAggregation = MonitorAggregation.Medium }),
                ("VIP+DNAT, events on, monitor aggregation medium", "10.96.0.100", 80, new EventOptions { Snaplen = 0, MonitorAggregation = MonitorAggregation.Medium }),
                ("pod IP, events off", "10.244.0.20", 8080, new EventOptions { Snaplen = 0, Kinds = new HashSet<Datapath.Abi.EventKind> { Datapath.Abi.EventKind.Exec } }),
            };
            foreach (var (cname, dst, port, options) in configs)
            {
                using var dp = Datapath.Control.LoadedDatapath.Load(cluster, options);
                var register = typeof(Datapath.Control.LoadedDatapath).GetMethod("RegisterEndpoint", BindingFlags.NonPublic | BindingFlags.Instance)!;
                register.Invoke(dp, [front, ifindex[0]]);
                register.Invoke(dp, [back, ifindex[1]]);
                var obj = (BpfObject)typeof(Datapath.Control.LoadedDatapath).GetProperty("Object", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(dp)!;
                var from = obj.Program(Datapath.Control.LoadedDatapath.FromEndpoint);
                long events = 0;
                using var reader = new RingBufferReader(dp.EventsMap, _ => events++);
                void Drain() => reader.Consume();

                // established: a SYN creates conntrack (+ DNAT) state, then the ACK repeats
                var ret = from.TestRun(Packets.Tcp("10.244.0.10", 40000, dst, port, Packets.TcpSyn), ifindex: ifindex[0]).ReturnValue;
                Drain();
                var ack = Packets.Tcp("10.244.0.10", 40000, dst, port, Packets.TcpAck);
                results.Add(($"datapath established, {cname} (SYN verdict {ret}; repeat 5000, ring drained between: under the 1 MiB wakeup mark)",
                    Repeat(from, ack, ifindex[0], Drain, 40, 5000)));
                long eventsBefore = events;
                const int rounds = 20, repeat = 20000;
                var past = Repeat(from, ack, ifindex[0], Drain, rounds, repeat);
                Drain();
                double perPacket = (events - eventsBefore) / ((double)rounds * repeat + 1000); // and Repeat's warm-up call of 1000 runs
                results.Add(($"datapath established, {cname} (repeat 20000: past the 1 MiB wakeup mark; {perPacket:0.00} events per packet)", past));

                // new flows: a SYN from a fresh source port each run
                var ns = new List<double>();
                for (int i = 0; i < 20000; i++)
                {
                    var syn = Packets.Tcp("10.244.0.10", (ushort)(41000 + i), dst, port, Packets.TcpSyn);
                    ns.Add(from.TestRun(syn, 1, ifindex: ifindex[0]).DurationNs);
                    if (i % 1000 == 0)
                        Drain();
                }
                Drain();
                results.Add(($"datapath new flow, {cname} (repeat=1, mean of 20000 flows)", ns.Average()));
                var pkt1 = Packets.Tcp("10.244.0.10", 40000, dst, port, Packets.TcpAck);
                var single = new List<double>();
                for (int i = 0; i < 20000; i++)
                    single.Add(from.TestRun(pkt1, 1, ifindex: ifindex[0]).DurationNs);
                Drain();
                results.Add(($"datapath established, {cname} (repeat=1, mean of 20000)", single.Average()));
            }
        }
        finally
        {
            foreach (var l in links)
                Sh("ip", "link", "del", l);
        }
        using (var baseline = BpfObject.Open("baseline", File.ReadAllBytes(baselineObject)))
        {
            baseline.Load();
            using var reader = new RingBufferReader(baseline.Map("fxb_events"), _ => { });
            var pkt = Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080, Packets.TcpSyn);
            foreach (var name in new[] { "fxb_empty", "fxb_lookup", "fxb_lookup_event" })
            {
                var p = baseline.Program(name);
                var s = new List<double>();
                for (int i = 0; i < 20000; i++)
                {
                    s.Add(p.TestRun(pkt, 1).DurationNs);
                    if (i % 1000 == 0)
                        reader.Consume();
                }
                results.Add(($"{name[4..]} (repeat=1, mean of 20000)", s.Average()));
            }
            // a new flow's floor: a fresh 5-tuple per run (as the new-flow runs above) inserted into an LRU hash, plus an event
            var insert = baseline.Program("fxb_insert_event");
            var ins = new List<double>();
            for (int i = 0; i < 20000; i++)
            {
                ins.Add(insert.TestRun(Packets.Tcp("10.244.0.10", (ushort)(41000 + i), "10.244.0.20", 8080, Packets.TcpSyn), 1).DurationNs);
                if (i % 1000 == 0)
                    reader.Consume();
            }
            results.Add(("insert_event: LRU insert + 64B event (repeat=1, fresh flow each run, mean of 20000)", ins.Average()));
        }
        foreach (var (name, v) in results)
            Console.WriteLine($"datapath {name}: {v:0.0} ns/packet");
    }

    private static void Sh(params string[] args)
    {
        using var p = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(args[0], args[1..]))!;
        if (!p.WaitForExit(15000) || p.ExitCode != 0)
            throw new InvalidOperationException(string.Join(' ', args) + " failed");
    }
}
