using System.Diagnostics;
using System.Text.Json.Nodes;
using DuckDB.NET.Data;
using Forensics.Cilium;
using Forensics.Query;

namespace Forensics.Bench;

/// <summary>
/// Storage and queries of an imported export: N Hubble exporter lines shaped like real ones (the
/// templates are real lines from a Hubble 1.19 exporter file and Cilium's docs, with the time,
/// uuid, ports and pods varied over a small cluster), and N Tetragon lines (process_exec from
/// cilium/tetragon's testdata, tcp_connect kprobes); `forensics import` in-process; bytes of the
/// recording's Parquet against the JSON bytes; then questions over the recording against DuckDB
/// over the JSON lines.
/// </summary>
public static class ImportBench
{
    public static void Run(string root, long n, string testdata)
    {
        Directory.CreateDirectory(root);
        var hubbleJson = Path.Combine(root, "hubble-export.jsonl");
        var tetragonJson = Path.Combine(root, "tetragon-export.jsonl");
        WriteHubble(hubbleJson, n, testdata);
        WriteTetragon(tetragonJson, n, testdata);

        foreach (var (kind, file) in new[] { (ExportKind.Hubble, hubbleJson), (ExportKind.Tetragon, tetragonJson) })
        {
            var rec = Path.Combine(root, "rec-" + kind.ToString().ToLowerInvariant());
            if (Directory.Exists(rec))
                Directory.Delete(rec, true);
            var sw = Stopwatch.StartNew();
            var s = Importer.Import(kind, [file], rec);
            double secs = sw.Elapsed.TotalSeconds;
            long json = new FileInfo(file).Length;
            Console.WriteLine($"import {kind.ToString().ToLowerInvariant()} n={n}: {secs:0.0}s ({n / secs:0} lines/s), json {json} B ({(double)json / n:0.0} B/event), " +
                $"parquet {s.Bytes} B ({(double)s.Bytes / n:0.0} B/event), parquet/json = 1/{(double)json / s.Bytes:0.0}; rows {string.Join(", ", s.Rows.Select(kv => kv.Key + " " + kv.Value))}, malformed {s.Source.Malformed}");
        }

        // questions: over the recording (QuerySession, what `forensics query` runs) against DuckDB over the JSON lines
        Ask("drops by reason and pod", Path.Combine(root, "rec-hubble"),
            "SELECT reason_name, src_namespace, src_pod, count(*) AS n FROM \"drop\" GROUP BY ALL",
            $"SELECT flow.drop_reason_desc, flow.source.namespace, flow.source.pod_name, count(*) FROM read_json('{hubbleJson}', format='newline_delimited', maximum_object_size=1048576) WHERE flow.verdict = 'DROPPED' GROUP BY ALL");
        Ask("external connects by process", Path.Combine(root, "rec-tetragon"),
            "SELECT \"binary\", count(*) AS n FROM connect WHERE NOT (dst_ip LIKE '10.%' OR dst_ip LIKE '192.168.%' OR dst_ip LIKE '127.%') GROUP BY ALL",
            $"SELECT process_kprobe.process.binary, count(*) FROM read_json('{tetragonJson}', format='newline_delimited', maximum_object_size=1048576) WHERE process_kprobe IS NOT NULL AND NOT (process_kprobe.args[1].sock_arg.daddr LIKE '10.%' OR process_kprobe.args[1].sock_arg.daddr LIKE '192.168.%' OR process_kprobe.args[1].sock_arg.daddr LIKE '127.%') GROUP BY ALL");
        var wall = Stopwatch.StartNew();
        using (var s = QuerySession.Open([Path.Combine(root, "rec-hubble")]))
            Console.WriteLine($"query \"drops_by_workload (forensics drops)\" n={n}: open+query {Time(() => s.Execute("SELECT count(*) FROM drops_by_workload")):0.000}s in-process (open {wall.Elapsed.TotalSeconds:0.000}s)");
    }

    private static void Ask(string name, string rec, string sql, string jsonSql)
    {
        double pq;
        using (var s = QuerySession.Open([rec]))
        {
            s.Execute(sql); // warm: views, file metadata
            pq = Median(() => Time(() => s.Execute(sql)));
        }
        double js = Time(() =>
        {
            using var con = new DuckDBConnection("DataSource=:memory:");
            con.Open();
            using var cmd = con.CreateCommand();
            cmd.CommandText = "SET threads=2; " + jsonSql;
            using var r = cmd.ExecuteReader();
            while (r.Read()) { }
        });
        Console.WriteLine($"query \"{name}\": recording {pq:0.000}s (forensics' query session, median of 3), duckdb/json {js:0.000}s: {js / pq:0}x");
    }

    private static double Median(Func<double> f)
    {
        var t = new[] { f(), f(), f() };
        Array.Sort(t);
        return t[1];
    }

    private static double Time(Action a)
    {
        var sw = Stopwatch.StartNew();
        a();
        return sw.Elapsed.TotalSeconds;
    }

    private static (string Ns, string Pod, uint Id, string[] Labels) Pod(Random rnd)
    {
        int i = rnd.Next(40);
        var ns = "ns" + (i % 4);
        var app = "app" + (i % 10);
        return (ns, $"{app}-7d9f8c{i:D2}-x{i % 7}q", 20000u + (uint)(i % 10),
            [$"k8s:app={app}", $"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={ns}", "k8s:io.cilium.k8s.policy.cluster=default", $"k8s:io.cilium.k8s.policy.serviceaccount={app}", $"k8s:io.kubernetes.pod.namespace={ns}"]);
    }

    private static void WriteHubble(string path, long n, string testdata)
    {
        // [0] a drop (printer test), [1..3] traces (a 1.19 exporter file), [4] a policy-verdict deny
        var templates = File.ReadAllLines(Path.Combine(testdata, "hubble_real_flows.jsonl")).Take(5).Select(l => JsonNode.Parse(l)!).ToArray();
        var rnd = new Random(7);
        var t0 = new DateTime(2026, 12, 4, 10, 0, 0, DateTimeKind.Utc);
        int[] reasons = [133, 181, 132, 134, 137, 151, 158, 160, 167, 169, 171, 174, 176, 189];
        using var w = new StreamWriter(path);
        for (long i = 0; i < n; i++)
        {
            var f = templates[(i % 4) switch { 3 => 4, 2 => 0, _ => 1 + rnd.Next(3) }].DeepClone();
            var flow = f["flow"]!;
            var time = t0.AddTicks(i * 6_000 + rnd.Next(5000)).ToString("yyyy-MM-ddTHH:mm:ss.fffffff00Z");
            flow["time"] = time;
            f["time"] = time;
            flow["uuid"] = Guid.NewGuid().ToString();
            var (ns, pod, id, labels) = Pod(rnd);
            var src = new JsonObject { ["ID"] = 100 + rnd.Next(40), ["identity"] = id, ["namespace"] = ns, ["labels"] = new JsonArray([.. labels.Select(l => (JsonNode)l)]), ["pod_name"] = pod };
            var (dns, dpod, did, dlabels) = Pod(rnd);
            var dst = new JsonObject { ["identity"] = did, ["namespace"] = dns, ["labels"] = new JsonArray([.. dlabels.Select(l => (JsonNode)l)]), ["pod_name"] = dpod };
            flow["source"] = src;
            flow["destination"] = dst;
            flow["IP"]!["source"] = $"10.0.{rnd.Next(4)}.{rnd.Next(1, 250)}";
            var node = "kind-kind/worker" + rnd.Next(3);
            flow["node_name"] = node;
            f["node_name"] = node;
            flow["IP"]!["destination"] = $"10.0.{rnd.Next(4)}.{rnd.Next(1, 250)}";
            var tcp = flow["l4"]!["TCP"]!;
            tcp["flags"] ??= new JsonObject { ["SYN"] = true };
            tcp["source_port"] = rnd.Next(32768, 61000);
            tcp["destination_port"] = new[] { 80, 443, 8080, 5432, 6379 }[rnd.Next(5)];
            if (flow["verdict"]!.GetValue<string>() == "DROPPED" && flow["event_type"]!["type"]!.GetValue<int>() == 1)
                flow["drop_reason_desc"] = FlowName(reasons[rnd.Next(reasons.Length)]);
            w.WriteLine(f.ToJsonString());
        }
    }

    private static string FlowName(int code) => Cilium.Hubble.FlowDecoder.EnumName((Cilium.Hubble.Api.DropReason)code);

    private static void WriteTetragon(string path, long n, string testdata)
    {
        var exec = File.ReadAllLines(Path.Combine(testdata, "tetragon_process_exec_events.jsonl")).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l)!).ToArray();
        var rnd = new Random(11);
        var t0 = new DateTime(2026, 12, 4, 10, 0, 0, DateTimeKind.Utc);
        string[] binaries = ["/usr/bin/curl", "/usr/bin/wget", "/usr/local/bin/app", "/bin/sh", "/usr/bin/python3", "/usr/sbin/nginx"];
        using var w = new StreamWriter(path);
        for (long i = 0; i < n; i++)
        {
            var e = exec[rnd.Next(exec.Length)].DeepClone();
            var time = t0.AddTicks(i * 6_000).ToString("yyyy-MM-ddTHH:mm:ss.fffffff00Z");
            e["time"] = time;
            var proc = e["process_exec"]!["process"]!;
            proc["pid"] = 1000 + (int)(i % 50000);
            proc["exec_id"] = Convert.ToBase64String(System.Text.Encoding.ASCII.GetBytes($"my-node:{13665822624856 + i * 1000}:{1000 + i % 50000}"));
            proc["binary"] = binaries[rnd.Next(binaries.Length)];
            if (i % 2 == 1)
            {
                // the connect that process made, as Tetragon's network-monitoring policy reports it
                var kprobe = new JsonObject
                {
                    ["process"] = proc.DeepClone(),
                    ["parent"] = e["process_exec"]!["parent"]!.DeepClone(),
                    ["function_name"] = "tcp_connect",
                    ["args"] = new JsonArray(new JsonObject
                    {
                        ["sock_arg"] = new JsonObject
                        {
                            ["family"] = "AF_INET", ["type"] = "SOCK_STREAM", ["protocol"] = "IPPROTO_TCP",
                            ["saddr"] = $"10.0.{rnd.Next(4)}.{rnd.Next(1, 250)}",
                            ["daddr"] = rnd.Next(10) < 3 ? $"203.0.113.{rnd.Next(1, 250)}" : $"10.96.{rnd.Next(4)}.{rnd.Next(1, 250)}",
                            ["sport"] = rnd.Next(32768, 61000), ["dport"] = 443, ["cookie"] = rnd.NextInt64(1, long.MaxValue).ToString(), ["state"] = "TCP_SYN_SENT",
                        },
                    }),
                    ["action"] = "KPROBE_ACTION_POST",
                    ["policy_name"] = "monitor-network-activity-outside-cluster-cidr-range",
                };
                e = new JsonObject { ["process_kprobe"] = kprobe, ["node_name"] = "my-node", ["time"] = time };
            }
            w.WriteLine(e.ToJsonString());
        }
    }
}
