using System.Diagnostics;
using DuckDB.NET.Data;

namespace Forensics.Bench;

/// <summary>
/// Storage and query: synthetic drop and connect events (varied like a small cluster's),
/// written by DuckDB as Parquet with the recorder's table schemas (drop.v1, connect.v1),
/// as Hubble exporter JSON lines (drops) and Tetragon JSON lines (connects as
/// process_kprobe tcp_connect), then the two questions over each, and jq over a sample.
/// </summary>
internal static class QueryBench
{
    private static DuckDBConnection Open()
    {
        var con = new DuckDBConnection("DataSource=:memory:");
        con.Open();
        return con;
    }

    private static object? Scalar(DuckDBConnection con, string sql)
    {
        using var cmd = con.CreateCommand();
        cmd.CommandText = sql;
        return cmd.ExecuteScalar();
    }

    private static void Exec(DuckDBConnection con, string sql)
    {
        using var cmd = con.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    private static void WriteLines(DuckDBConnection con, string path, string sql)
    {
        using var cmd = con.CreateCommand();
        cmd.CommandText = sql;
        using var r = cmd.ExecuteReader();
        using var w = new StreamWriter(path, false, new System.Text.UTF8Encoding(false), 1 << 20);
        while (r.Read())
        {
            w.Write(r.GetString(0));
            w.Write('\n');
        }
    }

    /// <summary>Median wall seconds of a query (all rows read) over fresh connections.</summary>
    private static (double Seconds, long Rows) Time(string sql, int runs = 3)
    {
        var times = new List<double>();
        long rows = 0;
        for (int i = 0; i < runs; i++)
        {
            using var con = Open();
            var sw = Stopwatch.StartNew();
            using var cmd = con.CreateCommand();
            cmd.CommandText = sql;
            using var r = cmd.ExecuteReader();
            rows = 0;
            while (r.Read())
                rows++;
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return (times[times.Count / 2], rows);
    }

    // a small cluster: 40 pods in 4 namespaces, identities 256.., 14 drop reasons, 12 binaries
    private const string Pods = "(SELECT i AS pi, 'ns' || (i % 4) AS ns, 'app' || (i % 10) || '-' || i AS pod, '10.244.' || (i % 4) || '.' || (10 + i) AS ip, 256 + (i % 10) AS identity FROM range(40) t(i))";

    private const string DropReasons =
        "['POLICY_DENIED','POLICY_DENIED','POLICY_DENIED','POLICY_DENIED','CT_MAP_INSERTION_FAILED','INVALID_SOURCE_IP','UNSUPPORTED_L3_PROTOCOL','NO_SERVICE','STALE_OR_UNROUTABLE_IP','INVALID_PACKET_DROPPED','AUTH_REQUIRED','POLICY_DENY','FRAG_NOT_FOUND','NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT']";

    /// <summary>Exec events: Parquet with exec.v1's columns against Tetragon process_exec lines (the reference's shape, without container details).</summary>
    public static void Exec(string root, long n)
    {
        Directory.CreateDirectory(root);
        string pq = Path.Combine(root, $"exec-{n}.parquet"), js = Path.Combine(root, $"exec-{n}.tetragon.jsonl");
        using var con = Open();
        Exec(con, $"CREATE TABLE pods AS {Pods}");
        Exec(con, $"""
            CREATE TABLE exec AS
            SELECT make_timestamp(1795000000000000 + i * 370)::TIMESTAMPTZ AS time, (1000000000000 + i * 370000)::UBIGINT AS ktime_ns,
                   (i % 2)::UINTEGER AS cpu, (10000 + i % 4000000)::UINTEGER AS pid, (10000 + i % 4000000)::UINTEGER AS tid,
                   (9000 + hash(i) % 1000)::UINTEGER AS ppid, 0::UINTEGER AS uid, 0::UINTEGER AS gid,
                   (i + 1)::UBIGINT AS exec_id, (hash(i) % 1000 + 1)::UBIGINT AS parent_exec_id,
                   make_timestamp(1795000000000000 + i * 370)::TIMESTAMPTZ AS process_start,
                   (['/usr/bin/curl','/usr/bin/wget','/usr/local/bin/python3','/usr/bin/java','/usr/sbin/nginx','/usr/bin/node','/app/server','/usr/bin/psql','/usr/bin/redis-cli','/bin/busybox','/usr/bin/ssh','/usr/bin/git'])[1 + (hash(i * 5) % 12)::INT] AS "binary",
                   (['-s https://example.com/health', '-D', '--config /etc/app.yaml', '-c "select 1"', '', 'status --short'])[1 + (hash(i * 3) % 6)::INT] AS arguments,
                   false AS args_truncated, '/' AS cwd, 'comm' AS comm, false AS procfs,
                   (4026531840 + s.pi)::UINTEGER AS netns_ino, (5000 + s.pi)::UBIGINT AS cgroup_id, s.ns AS namespace, s.pod AS pod
            FROM range({n}) t(i) JOIN pods s ON s.pi = hash(i * 11) % 40
            """);
        Exec(con, $"COPY (SELECT * FROM exec ORDER BY time) TO '{pq}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)");
        WriteLines(con, js, """
            SELECT printf('{"process_exec":{"process":{"exec_id":"%s","pid":%d,"uid":%d,"cwd":"%s","binary":"%s","arguments":"%s","flags":"execve clone","start_time":"%s","auid":4294967295,"pod":{"namespace":"%s","name":"%s"},"parent_exec_id":"%s","refcnt":1},"parent":{"exec_id":"%s","pid":%d,"uid":0,"cwd":"/","binary":"/bin/sh","flags":"execve clone","start_time":"%s","auid":4294967295,"parent_exec_id":"%s"}},"node_name":"kind-worker","time":"%s"}',
                to_base64(encode('kind-worker:' || exec_id)), pid, uid, cwd, "binary", replace(arguments, '"', '\"'), ts, namespace, pod,
                to_base64(encode('kind-worker:' || parent_exec_id)), to_base64(encode('kind-worker:' || parent_exec_id)), ppid, ts,
                to_base64(encode('kind-worker:1')), ts)
            FROM (SELECT *, strftime(time, '%Y-%m-%dT%H:%M:%S.%f000Z') AS ts FROM exec) ORDER BY time
            """);
        double p = new FileInfo(pq).Length, j = new FileInfo(js).Length;
        Console.WriteLine($"storage exec (Tetragon process_exec JSON, without container/labels) n={n}: parquet {p / n:0.0} B/event, json lines {j / n:0.0} B/event, ratio parquet/json = 1/{j / p:0.0}");
        File.Delete(pq);
        File.Delete(js);
    }

    public static void Run(string root, long n, int jqSample)
    {
        Directory.CreateDirectory(root);
        string dropParquet = Path.Combine(root, $"drop-{n}.parquet"), dropJson = Path.Combine(root, $"drop-{n}.hubble.jsonl");
        string connParquet = Path.Combine(root, $"connect-{n}.parquet"), connJson = Path.Combine(root, $"connect-{n}.tetragon.jsonl");
        using (var con = Open())
        {
            var sw = Stopwatch.StartNew();
            Exec(con, $"CREATE TABLE pods AS {Pods}");
            Exec(con, $"""
                CREATE TABLE drop AS
                SELECT make_timestamp(1795000000000000 + i * 37)::TIMESTAMPTZ AS time,
                       (1000000000000 + i * 37000)::UBIGINT AS ktime_ns, (i % 2)::UINTEGER AS cpu, 4::UTINYINT AS ip_version,
                       s.ip AS src_ip, (32768 + hash(i) % 28000)::USMALLINT AS src_port, d.ip AS dst_ip,
                       ([80, 443, 8080, 53, 5432])[1 + (hash(i * 7) % 5)::INT]::USMALLINT AS dst_port,
                       CASE WHEN i % 10 = 0 THEN 'udp' ELSE 'tcp' END AS protocol, CASE WHEN i % 10 = 0 THEN '' ELSE 'SYN' END AS tcp_flags,
                       s.identity::UINTEGER AS src_identity, d.identity::UINTEGER AS dst_identity, (100 + s.pi)::USMALLINT AS endpoint_id,
                       (10 + s.pi)::UINTEGER AS ifindex, (hash(i) % 4000000)::UINTEGER AS flow_id, 74::UINTEGER AS pkt_len,
                       'from-endpoint' AS obs_point, 'egress' AS direction, (130 + (hash(i * 3) % 14))::USMALLINT AS reason,
                       {DropReasons}[1 + (hash(i * 3) % 14)::INT] AS reason_name, 'bpf_lxc.c' AS file, (1000 + hash(i * 3) % 14)::USMALLINT AS line,
                       'new' AS ct_state, s.ns AS src_ns, s.pod AS src_pod, d.ns AS dst_ns, d.pod AS dst_pod
                FROM range({n}) t(i) JOIN pods s ON s.pi = hash(i * 11) % 40 JOIN pods d ON d.pi = hash(i * 13) % 40
                """);
            Exec(con, $"COPY (SELECT * EXCLUDE (src_ns, src_pod, dst_ns, dst_pod) FROM drop ORDER BY time) TO '{dropParquet}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)");
            // the Hubble exporter's line shape (see /work/shared/reference/hubble_exporter_lines.jsonl)
            WriteLines(con, dropJson, """
                SELECT printf('{"flow":{"time":"%s","verdict":"DROPPED","IP":{"source":"%s","destination":"%s","ipVersion":"IPv4"},"l4":%s,"source":{"namespace":"%s","pod_name":"%s"},"destination":{"namespace":"%s","pod_name":"%s"},"node_name":"kind-kind/kind-worker","drop_reason_desc":"%s"},"node_name":"kind-kind/kind-worker","time":"%s"}',
                    ts, src_ip, dst_ip,
                    CASE WHEN protocol = 'tcp' THEN printf('{"TCP":{"source_port":%d,"destination_port":%d,"flags":{"SYN":true}}}', src_port, dst_port)
                         ELSE printf('{"UDP":{"source_port":%d,"destination_port":%d}}', src_port, dst_port) END,
                    src_ns, src_pod, dst_ns, dst_pod, reason_name, ts)
                FROM (SELECT *, strftime(time, '%Y-%m-%dT%H:%M:%S.%f000Z') AS ts FROM drop) ORDER BY time
                """);
            Exec(con, "DROP TABLE drop");
            // connects: 12 binaries, 30% to TEST-NET "external" addresses
            Exec(con, $"""
                CREATE TABLE connect AS
                SELECT make_timestamp(1795000000000000 + i * 37)::TIMESTAMPTZ AS time, (1000000000000 + i * 37000)::UBIGINT AS ktime_ns,
                       (i % 2)::UINTEGER AS cpu, (1000 + hash(i) % 5000)::UINTEGER AS pid, (1000 + hash(i) % 5000)::UINTEGER AS tid, 0::UINTEGER AS uid,
                       (hash(i) % 100000)::UBIGINT AS exec_id,
                       (['/usr/bin/curl','/usr/bin/wget','/usr/local/bin/python3','/usr/bin/java','/usr/sbin/nginx','/usr/bin/node','/app/server','/usr/bin/psql','/usr/bin/redis-cli','/bin/busybox','/usr/bin/ssh','/usr/bin/git'])[1 + (hash(i * 5) % 12)::INT] AS binary,
                       'comm' AS comm, 'tcp_connect' AS connect_kind, 4::UTINYINT AS ip_version, s.ip AS src_ip, (32768 + hash(i) % 28000)::USMALLINT AS src_port,
                       CASE WHEN hash(i * 17) % 10 < 3 THEN '203.0.113.' || (hash(i * 19) % 250) ELSE d.ip END AS dst_ip,
                       ([80, 443, 8080, 53, 5432])[1 + (hash(i * 7) % 5)::INT]::USMALLINT AS dst_port, 'tcp' AS protocol,
                       (4026531840 + s.pi)::UINTEGER AS netns_ino, (5000 + s.pi)::UBIGINT AS cgroup_id, s.ns AS namespace, s.pod AS pod
                FROM range({n}) t(i) JOIN pods s ON s.pi = hash(i * 11) % 40 JOIN pods d ON d.pi = hash(i * 13) % 40
                """);
            Exec(con, $"COPY (SELECT * FROM connect ORDER BY time) TO '{connParquet}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)");
            // Tetragon's JSON export of a tcp_connect kprobe (process_kprobe with a sock_arg)
            WriteLines(con, connJson, """
                SELECT printf('{"process_kprobe":{"process":{"exec_id":"%s","pid":%d,"uid":%d,"cwd":"/","binary":"%s","flags":"execve clone","start_time":"%s","auid":4294967295,"pod":{"namespace":"%s","name":"%s"}},"function_name":"tcp_connect","args":[{"sock_arg":{"family":"AF_INET","type":"SOCK_STREAM","protocol":"IPPROTO_TCP","saddr":"%s","daddr":"%s","sport":%d,"dport":%d}}],"action":"KPROBE_ACTION_POST"},"node_name":"kind-worker","time":"%s"}',
                    to_base64(encode('kind-worker:' || exec_id)), pid, uid, "binary", ts, namespace, pod, src_ip, dst_ip, src_port, dst_port, ts)
                FROM (SELECT *, strftime(time, '%Y-%m-%dT%H:%M:%S.%f000Z') AS ts FROM connect) ORDER BY time
                """);
            Console.WriteLine($"query generated {n} drop and {n} connect events in {sw.Elapsed.TotalSeconds:0.0}s");
        }
        foreach (var (name, pq, js) in new[] { ("drop (Hubble JSON)", dropParquet, dropJson), ("connect (Tetragon JSON)", connParquet, connJson) })
        {
            double p = new FileInfo(pq).Length, j = new FileInfo(js).Length;
            Console.WriteLine($"storage {name} n={n}: parquet {p / n:0.0} B/event, json lines {j / n:0.0} B/event, ratio parquet/json = 1/{j / p:0.0}");
        }

        var questions = new (string Name, string Parquet, string Json, string Jq, string JqFile)[]
        {
            ("drops by reason and workload",
                $"SELECT reason_name, src_identity, count(*) AS n FROM read_parquet('{dropParquet}') GROUP BY ALL ORDER BY n DESC",
                $"SELECT flow.drop_reason_desc, flow.source.namespace, flow.source.pod_name, count(*) AS n FROM read_json('{dropJson}', format='newline_delimited') GROUP BY ALL ORDER BY n DESC",
                "reduce inputs as $l ({}; .[$l.flow.drop_reason_desc + \" \" + ($l.flow.source.namespace // \"\") + \"/\" + ($l.flow.source.pod_name // \"\")] += 1)",
                dropJson),
            ("external connects by process",
                $"SELECT \"binary\", count(*) AS n FROM read_parquet('{connParquet}') WHERE NOT (dst_ip LIKE '10.%' OR dst_ip LIKE '192.168.%' OR dst_ip LIKE '127.%') GROUP BY ALL ORDER BY n DESC",
                $"SELECT process_kprobe.process.binary, count(*) AS n FROM read_json('{connJson}', format='newline_delimited') WHERE NOT (process_kprobe.args[1].sock_arg.daddr LIKE '10.%' OR process_kprobe.args[1].sock_arg.daddr LIKE '192.168.%' OR process_kprobe.args[1].sock_arg.daddr LIKE '127.%') GROUP BY ALL ORDER BY n DESC",
                "reduce (inputs | .process_kprobe | select(.args[0].sock_arg.daddr | test(\"^(10|127)\\\\.|^192\\\\.168\\\\.\") | not)) as $e ({}; .[$e.process.binary] += 1)",
                connJson),
        };
        ForensicsQuery(root, n, dropParquet, connParquet);
        foreach (var q in questions)
        {
            var (pqs, pr) = Time(q.Parquet);
            var (jss, jr) = Time(q.Json, 1);
            // jq over the first jqSample lines, extrapolated linearly to n
            var sample = Path.Combine(root, "jq-sample.jsonl");
            File.WriteAllLines(sample, File.ReadLines(q.JqFile).Take(jqSample));
            var psi = new ProcessStartInfo("jq", ["-n", "-c", q.Jq, sample]) { RedirectStandardOutput = true };
            var sw = Stopwatch.StartNew();
            using (var jq = Process.Start(psi)!)
            {
                jq.StandardOutput.ReadToEnd();
                if (!jq.WaitForExit(600_000) || jq.ExitCode != 0)
                    throw new InvalidOperationException("jq failed");
            }
            double jqs = sw.Elapsed.TotalSeconds * n / jqSample;
            Console.WriteLine($"query \"{q.Name}\" n={n}: duckdb/parquet {pqs:0.000}s ({pr} groups), duckdb/json {jss:0.000}s ({jr} groups), jq {jqs:0.0}s (extrapolated from {jqSample} lines in {sw.Elapsed.TotalSeconds:0.00}s); " +
                $"parquet is {jss / pqs:0.0}x faster than duckdb/json and {jqs / pqs:0}x faster than jq");
        }
    }

    /// <summary>
    /// The same events as a recording (the recorder's layout and manifest, built by the query tests'
    /// TestRecording, with endpoints and identities snapshots naming the 40 pods), asked through
    /// `forensics`: the named reconstructions and `forensics query` with the plain question, as a user
    /// would run them (process start included), and the same SQL in-process through QuerySession.
    /// </summary>
    private static void ForensicsQuery(string root, long n, string dropParquet, string connParquet)
    {
        var dir = Path.Combine(root, $"rec-{n}");
        if (Directory.Exists(dir))
            Directory.Delete(dir, true);
        var rec = new Forensics.Query.Tests.TestRecording("node-a", dir);
        using (var conn = new DuckDB.NET.Data.DuckDBConnection("DataSource=:memory:"))
        {
            conn.Open();
            foreach (var (table, select) in new[] { ("drop", $"SELECT * FROM read_parquet('{dropParquet}')"), ("connect", $"SELECT * EXCLUDE (namespace, pod) FROM read_parquet('{connParquet}')") })
            {
                var rel = $"{table}/node=node-a/seg-900000.parquet";
                Directory.CreateDirectory(Path.Combine(dir, table, "node=node-a"));
                using var cmd = conn.CreateCommand();
                cmd.CommandText = $"COPY ({select}) TO '{Path.Combine(dir, rel)}' (FORMAT parquet)";
                cmd.ExecuteNonQuery();
                rec.AddFile(table, rel, n);
            }
        }
        var taken = Forensics.Query.Tests.TestRecording.Start;
        for (int i = 0; i < 40; i++)
        {
            rec.Add("endpoints", new Dictionary<string, object?>
            {
                ["phase"] = "start", ["taken"] = taken, ["endpoint_id"] = (ushort)(100 + i), ["namespace"] = $"ns{i % 4}",
                ["pod"] = $"app{i % 10}-{i}", ["ip"] = $"10.244.{i % 4}.{10 + i}", ["identity"] = (uint)(256 + i % 10), ["ifindex"] = (uint)(10 + i),
                ["ingress_enforced"] = true, ["egress_enforced"] = false,
            });
        }
        for (int i = 0; i < 10; i++)
            rec.Add("identities", new Dictionary<string, object?> { ["phase"] = "start", ["taken"] = taken, ["identity"] = (uint)(256 + i), ["labels"] = $"k8s:app=app{i}", ["kind"] = "endpoint" });
        rec.Build();
        string exe = Environment.GetEnvironmentVariable("FXB_FORENSICS") ?? "./forensics";
        var commands = new (string Name, string[] Args)[]
        {
            ("forensics drops (drops_by_workload)", ["drops", dir]),
            ("forensics query: drops by reason and identity", ["query", dir, "SELECT reason_name, src_identity, count(*) AS n FROM drop GROUP BY ALL ORDER BY n DESC"]),
            ("forensics connects --external (external_connects)", ["connects", dir, "--external"]),
            ("forensics query: external connects by binary", ["query", dir, "SELECT \"binary\", count(*) AS n FROM connect WHERE NOT (dst_ip LIKE '10.%' OR dst_ip LIKE '192.168.%' OR dst_ip LIKE '127.%') GROUP BY ALL ORDER BY n DESC"]),
            ("forensics --version (process start only)", ["--version"]),
        };
        foreach (var (name, args) in commands)
        {
            var times = new List<double>();
            int lines = 0;
            for (int run = 0; run < 3; run++)
            {
                var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true };
                foreach (var a in args)
                    psi.ArgumentList.Add(a);
                var sw = Stopwatch.StartNew();
                using var p = Process.Start(psi)!;
                var stdout = p.StandardOutput.ReadToEndAsync();
                var stderr = p.StandardError.ReadToEndAsync();
                if (!p.WaitForExit(600_000) || p.ExitCode != 0)
                    throw new InvalidOperationException($"{exe} {string.Join(' ', args)}: exit {p.ExitCode}: {stderr.Result}");
                times.Add(sw.Elapsed.TotalSeconds);
                lines = stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;
            }
            times.Sort();
            Console.WriteLine($"forensics n={n} \"{name}\": {times[1]:0.000}s wall (median of 3, {lines} lines out)");
        }
        // in-process: the recording opened as `forensics query` opens it, the SQL timed without process start
        {
            var opens = new List<double>();
            for (int run = 0; run < 3; run++)
            {
                var sw = Stopwatch.StartNew();
                using var session = Forensics.Query.QuerySession.Open([dir]);
                opens.Add(sw.Elapsed.TotalSeconds);
            }
            opens.Sort();
            Console.WriteLine($"forensics n={n} in-process QuerySession.Open: {opens[1]:0.000}s (median of 3: manifest, hashes, views)");
        }
        foreach (var (name, sql) in new[]
        {
            ("drops_by_workload", "SELECT * FROM drops_by_workload"),
            ("drops by reason and identity", "SELECT reason_name, src_identity, count(*) AS n FROM drop GROUP BY ALL ORDER BY n DESC"),
            ("external_connects", "SELECT * FROM external_connects"),
        })
        {
            var times = new List<double>();
            long rows = 0;
            for (int run = 0; run < 3; run++)
            {
                using var session = Forensics.Query.QuerySession.Open([dir]);
                var sw = Stopwatch.StartNew();
                rows = session.Execute(sql).Rows.Count;
                times.Add(sw.Elapsed.TotalSeconds);
            }
            times.Sort();
            Console.WriteLine($"forensics n={n} in-process QuerySession \"{name}\": {times[1]:0.000}s (median of 3, {rows} rows; the session opened beforehand)");
        }
        if (Environment.GetEnvironmentVariable("FXB_KEEP") != "1")
            rec.Dispose(); // deletes the recording
    }
}
