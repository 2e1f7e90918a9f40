using System.Globalization;
using Forensics.Bench;

var root = Environment.GetEnvironmentVariable("FXB_DIR") ?? Path.Combine(Path.GetTempPath(), "fxb-bench");
Directory.CreateDirectory(root);
string what = args.Length > 0 ? args[0] : "help";
double Arg(int i, double d) => args.Length > i ? double.Parse(args[i], CultureInfo.InvariantCulture) : d;

switch (what)
{
    case "ingest-fixed":
        // one trial at a fixed rate, in its own process so that peak memory is this trial's
        if (args.Length > 3 && args[3] == "warm")
            Console.WriteLine("ingest-warmup " + Ingest.Line(Ingest.Run(Arg(1, 1e6), 2, root))); // JIT tiering done before the measured trial
        Console.WriteLine("ingest-fixed " + Ingest.Line(Ingest.Run(Arg(1, 1e6), Arg(2, 5), root)));
        break;
    case "ingest-exec":
        // exec events (1640 bytes each in the ring) from bench/bpf/exec_producer.bpf.c: ingest-exec OBJECT RATE SECONDS [warm]
        if (args.Length > 4 && args[4] == "warm")
            Console.WriteLine("ingest-warmup " + Ingest.Line(Ingest.Run(Arg(2, 1e5), 2, root, execObject: args[1])));
        Console.WriteLine("ingest-exec " + Ingest.Line(Ingest.Run(Arg(2, 1e5), Arg(3, 5), root, execObject: args[1])));
        break;
    case "ingest-step":
        {
            // step the rate up until a trial loses events or the producer cannot reach the target
            double best = 0;
            foreach (var rate in new[] { 0.1e6, 0.2e6, 0.3e6, 0.5e6, 0.75e6, 1e6, 1.5e6, 2e6, 3e6, 4e6 })
            {
                var t = Ingest.Run(rate, Arg(1, 3), root);
                Console.WriteLine("ingest-step " + Ingest.Line(t));
                if (t.ZeroLoss)
                    best = Math.Max(best, t.Rate);
                if (!t.ZeroLoss || t.Rate < 0.9 * rate)
                    break;
            }
            Console.WriteLine($"ingest-best zero_loss_rate={best:0}");
            break;
        }
    case "arrow-monitor":
        // arrow-monitor RATE SECONDS: the monitor's Arrow stream fed at a fixed rate (issue 22)
        ArrowBench.Monitor(Arg(1, 1e6), Arg(2, 5), Path.Combine(root, "arrow"));
        break;
    case "arrow-query":
        // arrow-query N CLI_DLL [FORMAT,...]: `forensics query -f arrow|arrow-file|csv|json` over N trace rows (issue 22)
        ArrowBench.Query((long)Arg(1, 1e7), Path.Combine(root, "arrow"), args[2], args.Length > 3 ? args[3].Split(',') : null);
        break;
    case "columns":
        ColumnBench.Run();
        break;
    case "writer":
        WriterBench.Run(root, (int)Arg(1, 100));
        break;
    case "datapath":
        DatapathCost.Run(args[1]);
        break;
    case "query":
        QueryBench.Run(Path.Combine(root, "query"), (long)Arg(1, 1e6), (int)Arg(2, 100000));
        break;
    case "whatif":
        // flows through the real datapath under a changed policy: the engine in-process, then `forensics whatif` on EVENTS trace rows over FLOWS flows
        WhatIfBench.Run(Path.Combine(root, "whatif"), (long)Arg(1, 1e6), (long)Arg(2, 10000), Environment.GetEnvironmentVariable("FXB_FORENSICS") ?? "./forensics");
        break;
    case "import":
        // import N: Hubble and Tetragon exports shaped like real ones, imported; storage and queries (bench/RESULTS.md, section 6)
        ImportBench.Run(Path.Combine(root, "import"), (long)Arg(1, 1e6), Path.Combine(AppContext.BaseDirectory, "testdata"));
        break;
    case "storage-exec":
        QueryBench.Exec(Path.Combine(root, "query"), (long)Arg(1, 1e6));
        break;
    case "net":
        // net UDPFLOOD [SECONDS] [TRIALS] [SETUP,...]: iperf3 TCP, iperf3 and udpflood 64-byte UDP between two lab pods, no BPF against datapath (+ recording)
        NetBench.Net(root, args[1], Arg(2, 5), (int)Arg(3, 1), (args.Length > 4 ? args[4] : "nobpf,datapath,record").Split(','));
        break;
    case "capture":
        // capture UDPFLOOD [SECONDS] [PPS,PPS,...|0=max] [all|capture] [RING_MIB]: datapath capture against tcpdump -w on the same veth
        NetBench.Capture(root, args[1], Arg(2, 3),
            (args.Length > 3 ? args[3] : "100000,300000,1000000,0").Split(',').Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToList(),
            args.Length > 4 ? args[4] : "all", (uint)Arg(5, 16) << 20);
        break;
    case "monitor":
        {
            // monitor [SECONDS] [RATE,RATE,...|0=max]: events/s to 1 and 3 monitor socket clients against the ring drained directly, per rate
            var rates = (args.Length > 2 ? args[2] : "0").Split(',').Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToList();
            MonitorBench.Run(1, 100_000, 1, root); // warm-up: JIT, socket paths
            foreach (var rate in rates)
            {
                var direct = MonitorBench.Run(0, rate, Arg(1, 5), root);
                Console.WriteLine(MonitorBench.Line(direct, direct.Delivered(0)));
                foreach (var n in new[] { 1, 3 })
                    Console.WriteLine(MonitorBench.Line(MonitorBench.Run(n, rate, Arg(1, 5), root), direct.Delivered(0)));
            }
            break;
        }
    case "conntrack":
        // conntrack CTFLOOD [SECONDS] [RATE,RATE,...|0=max]: new connections against ours and conntrack -E -o timestamp > file
        ConntrackBench.Run(root, args[1], Arg(2, 5),
            (args.Length > 3 ? args[3] : "25000,50000,100000,0").Split(',').Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToList());
        break;
    case "flows-walk":
        // flows-walk [REPEATS]: a read of the datapath's conntrack map at 1k..64k entries, batched against key by key
        FlowWalkBench.Run([1024, 8192, 32768, 65536], (int)Arg(1, 20));
        break;
    case "soak":
        // soak FORENSICS CHURN EXECLOOP UDPFLOOD [MINUTES] [BASELINE_MINUTES] [CHURN/s] [EXECS/s] [DROPS/s]: issue 18's soak (bench/RESULTS.md)
        Soak.Run(new Soak.Options(Path.Combine(root, "soak"), args[1], args[2], args[3], args[4], Arg(5, 10), Arg(6, 2), Arg(7, 500), Arg(8, 300), Arg(9, 50),
            args.Length > 10 ? args[10].Split(' ', StringSplitOptions.RemoveEmptyEntries) : null));
        break;
    default:
        Console.Error.WriteLine("usage: Forensics.Bench soak FORENSICS CHURN EXECLOOP UDPFLOOD [MINUTES] [BASELINE_MINUTES] [CHURN/s] [EXECS/s] [DROPS/s] [RECORD_ARGS] | conntrack CTFLOOD [SECONDS] [RATE,...] | monitor [SECONDS] [RATE,...] | ingest-fixed RATE [SECONDS] | ingest-step [SECONDS] | datapath BASELINE.o | query N BATCH | whatif EVENTS FLOWS | net UDPFLOOD [SECONDS] [TRIALS] [nobpf,datapath,record,record-nocapture] | capture UDPFLOOD [SECONDS] [PPS,...] [all|capture] [RING_MIB]");
        return 2;
}
return 0;
