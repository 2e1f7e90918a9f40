using System.Diagnostics;
using System.Net;
using System.Text;
using Forensics.Datapath.Control;

namespace Forensics.Bench;

/// <summary>
/// What-if (issue 20): flows evaluated per second through the real datapath programs, against the
/// datapath's own per-packet cost measured in the same run (the kernel's BPF_PROG_TEST_RUN duration
/// of the very runs), and `forensics whatif` as a user runs it on a recording of N trace events
/// over F distinct flows between 40 pods in 4 namespaces (process start, DuckDB, load, replay).
/// </summary>
internal static class WhatIfBench
{
    private const int Pods = 40;

    private static string PodIp(int i) => $"10.244.{i % 4}.{10 + i}";

    private static (int Src, int Dst, ushort Sport, ushort Dport) Flow(long i) =>
        ((int)(i % Pods), (int)((i % Pods + 4 * (1 + i % 9) + i / 3 % 2) % Pods), (ushort)(20000 + i / Pods % 40000), (ushort)(new[] { 8080, 9090, 5432, 443 }[i % 4]));

    /// <summary>Each namespace's policy: its pods take 8080/TCP from pods of their namespace (the changed one adds 9090).</summary>
    private static string Policy(int ns, bool changed) => $"""
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: ns{ns}-ingress
          namespace: ns{ns}
        spec:
          endpointSelector:
            matchLabels:
              tier: app
          ingress:
            - fromEndpoints:
                - matchLabels:
                    tier: app
              toPorts:
                - ports:
                    - port: "8080"
                      protocol: TCP
        {(changed ? "            - port: \"9090\"\n              protocol: TCP\n" : "")}
        """;

    private static string PodYaml(int i) =>
        $"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: app{i % 10}-{i}\n  namespace: ns{i % 4}\n  labels:\n    app: app{i % 10}\n    tier: app\nstatus:\n  podIP: {PodIp(i)}\n";

    public static void Run(string root, long events, long flows, string exe)
    {
        Directory.CreateDirectory(root);
        Console.WriteLine($"whatif-bench events={events} flows={flows} load={File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        Engine(flows);
        Command(root, events, flows, exe);
    }

    /// <summary>The engine in-process: the flows' first packets (rebuilt from the 5-tuple) through PolicyReplay.</summary>
    private static void Engine(long flows)
    {
        var yaml = new StringBuilder();
        for (int ns = 0; ns < 4; ns++)
            yaml.Append("---\n").Append(Policy(ns, changed: true)).Append('\n');
        for (int i = 0; i < Pods; i++)
            yaml.Append(PodYaml(i));
        var cluster = ClusterLoader.Load(yaml.ToString(), "bench.yaml");
        var loadSw = Stopwatch.StartNew();
        using var replay = PolicyReplay.Load(cluster, cluster.Pods, [], []);
        var load = loadSw.Elapsed.TotalSeconds;
        var packets = new List<byte[]>((int)flows);
        for (long i = 0; i < flows; i++)
        {
            var (s, d, sport, dport) = Flow(i);
            packets.Add(ReplayPackets.FromTuple(IPAddress.Parse(PodIp(s)), sport, IPAddress.Parse(PodIp(d)), dport, 6)!);
        }
        int delivered = 0;
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        foreach (var p in packets)
            delivered += replay.Run(p).Delivered ? 1 : 0;
        var secs = sw.Elapsed.TotalSeconds;
        var cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
        double kernelPerRun = replay.KernelNs / (double)replay.Runs;
        double wallPerFlow = secs * 1e9 / flows;
        double runsPerFlow = replay.Runs / (double)flows;
        Console.WriteLine($"whatif-engine flows={flows} delivered={delivered} load_s={load:0.000} replay_s={secs:0.000} cpu_s={cpu:0.000} flows_per_s={flows / secs:0} flows_per_cpu_s={flows / cpu:0} " +
            $"runs_per_flow={runsPerFlow:0.00} kernel_ns_per_run={kernelPerRun:0} wall_ns_per_flow={wallPerFlow:0} " +
            $"ratio_to_kernel_cost_of_the_flow={wallPerFlow / (kernelPerRun * runsPerFlow):0.0}");
    }

    /// <summary>`forensics whatif` on a synthetic recording: N trace rows (each flow's new packet at both endpoints, the rest established).</summary>
    private static void Command(string root, long events, long flows, string exe)
    {
        var dir = Path.Combine(root, $"rec-{events}");
        if (Directory.Exists(dir))
            Directory.Delete(dir, true);
        var rec = new Forensics.Query.Tests.TestRecording("node-a", dir);
        var genSw = Stopwatch.StartNew();
        using (var conn = new DuckDB.NET.Data.DuckDBConnection("DataSource=:memory:"))
        {
            conn.Open();
            var rel = "trace/node=node-a/seg-900000.parquet";
            Directory.CreateDirectory(Path.Combine(dir, "trace", "node=node-a"));
            using var cmd = conn.CreateCommand();
            cmd.CommandText = $"""
                COPY (
                  WITH e AS (SELECT k, k % {flows} AS f FROM range({events}) t(k)),
                  g AS (SELECT k, f, f % {Pods} AS s, (f % {Pods} + 4 * (1 + f % 9) + f // 3 % 2) % {Pods} AS d, 20000 + (f // {Pods}) % 40000 AS sport,
                               [8080, 9090, 5432, 443][1 + f % 4] AS dport FROM e)
                  SELECT TIMESTAMPTZ '2026-11-23 10:00:00+00' + to_microseconds(1000000 + k) AS time,
                         CAST(1000000000 + k * 1000 AS UBIGINT) AS ktime_ns, CAST(0 AS UINTEGER) AS cpu, CAST(4 AS UTINYINT) AS ip_version,
                         '10.244.' || (s % 4) || '.' || (10 + s) AS src_ip, CAST(sport AS USMALLINT) AS src_port,
                         '10.244.' || (d % 4) || '.' || (10 + d) AS dst_ip, CAST(dport AS USMALLINT) AS dst_port,
                         'tcp' AS protocol, CASE WHEN k < {flows} THEN 'SYN' ELSE 'ACK' END AS tcp_flags,
                         CAST(256 + s AS UINTEGER) AS src_identity, CAST(256 + d AS UINTEGER) AS dst_identity,
                         CAST(CASE WHEN k < {flows} THEN 100 + s ELSE 100 + d END AS USMALLINT) AS endpoint_id,
                         CAST(10 + s AS UINTEGER) AS ifindex, CAST(f AS UINTEGER) AS flow_id, CAST(74 AS UINTEGER) AS pkt_len,
                         CASE WHEN k < {flows} OR k % 2 = 0 THEN 'from-endpoint' ELSE 'to-endpoint' END AS obs_point,
                         CASE WHEN k < {flows} OR k % 2 = 0 THEN 'egress' ELSE 'ingress' END AS direction,
                         CASE WHEN k < 2 * {flows} THEN 'new' ELSE 'established' END AS ct_state,
                         'datapath' AS source
                  FROM g ORDER BY k
                ) TO '{Path.Combine(dir, rel)}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)
                """;
            cmd.ExecuteNonQuery();
            rec.AddFile("trace", rel, events);
        }
        var taken = Forensics.Query.Tests.TestRecording.Start;
        for (int i = 0; i < Pods; i++)
        {
            rec.Add("endpoints", new Dictionary<string, object?>
            {
                ["phase"] = "start", ["taken"] = taken, ["endpoint_id"] = (ushort)(100 + i), ["namespace"] = $"ns{i % 4}",
                ["pod"] = $"app{i % 10}-{i}", ["ip"] = PodIp(i), ["identity"] = (uint)(256 + i), ["ifindex"] = (uint)(10 + i),
                ["ingress_enforced"] = true, ["egress_enforced"] = false,
            });
            rec.Add("identities", new Dictionary<string, object?>
            {
                ["phase"] = "start", ["taken"] = taken, ["identity"] = (uint)(256 + i),
                ["labels"] = $"k8s:app=app{i % 10} k8s:io.cilium.k8s.policy.cluster=default k8s:io.kubernetes.pod.namespace=ns{i % 4} k8s:tier=app", ["kind"] = "workload",
            });
        }
        for (int ns = 0; ns < 4; ns++)
            rec.Add("policies", new Dictionary<string, object?> { ["phase"] = "start", ["taken"] = taken, ["name"] = $"ns{ns}-ingress", ["namespace"] = $"ns{ns}", ["source_text"] = Policy(ns, changed: false) });
        rec.Build();
        var gen = genSw.Elapsed.TotalSeconds;
        var policyFile = Path.Combine(root, "changed.yaml");
        File.WriteAllText(policyFile, Policy(0, changed: true));

        var times = new List<double>();
        string summary = "";
        int code = 0;
        for (int run = 0; run < 3; run++)
        {
            var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in new[] { "whatif", dir, "--policy", policyFile, "--changed-only", "-f", "csv" })
                psi.ArgumentList.Add(a);
            var sw = Stopwatch.StartNew();
            using var p = Process.Start(psi)!;
            var so = p.StandardOutput.ReadToEndAsync();
            var se = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(600_000))
            {
                p.Kill(true);
                throw new TimeoutException("forensics whatif did not finish in 600 s");
            }
            times.Add(sw.Elapsed.TotalSeconds);
            summary = se.Result.Trim();
            code = p.ExitCode;
            _ = so.Result;
        }
        times.Sort();
        Console.WriteLine($"whatif-command events={events} flows={flows} recording_built_s={gen:0.0} wall_s={times[1]:0.00} (median of 3: {string.Join(", ", times.Select(t => t.ToString("0.00")))}) " +
            $"flows_per_s_overall={flows / times[1]:0} exit={code}");
        Console.WriteLine($"whatif-command summary: {summary}");
    }
}
