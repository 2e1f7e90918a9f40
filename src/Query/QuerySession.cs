using System.Data;
using System.Globalization;
using System.Text;
using DuckDB.NET.Data;
using Forensics.Query.Recording;
using Forensics.Query.Schema;
using Forensics.Format;

namespace Forensics.Query;

/// <summary>Limits a query runs under.</summary>
public sealed record QueryLimits
{
    /// <summary>DuckDB memory_limit, e.g. "1GB".</summary>
    public string MemoryLimit { get; init; } = "2GB";

    /// <summary>Wall-clock limit per statement; the connection is interrupted when it passes.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    public int Threads { get; init; } = 2;

    /// <summary>
    /// Rows a result held in memory may have (table and Parquet output, the reconstructions,
    /// replay); a larger result is refused rather than exhausting memory outside DuckDB's limit.
    /// Streamed output (<see cref="QuerySession.Stream"/>: CSV, JSON lines; <see cref="QuerySession.StreamArrow"/>: Arrow) has no row limit.
    /// </summary>
    public long MaxRows { get; init; } = 1_000_000;
}

/// <summary>Options of a session beyond the recordings themselves.</summary>
public sealed record QueryOptions
{
    public QueryLimits Limits { get; init; } = new();

    /// <summary>Extra CIDRs counted as inside the cluster (besides the manifest's and the snapshot's addresses).</summary>
    public IReadOnlyList<string> ClusterCidrs { get; init; } = [];

    /// <summary>Limits on what is read from the recordings (manifest size, file count, bundle extraction).</summary>
    public ReadLimits Read { get; init; } = ReadLimits.Default;

    /// <summary>
    /// Check every file's size and SHA-256 against the manifest before DuckDB reads it (a bundle's
    /// files were checked while it was extracted); a mismatch throws <see cref="RecordingTamperedException"/>.
    /// </summary>
    public bool VerifyFiles { get; init; }
}

/// <summary>A materialized result: column names, DuckDB type names, rows.</summary>
public sealed record QueryResult(IReadOnlyList<string> Columns, IReadOnlyList<string> Types, IReadOnlyList<object?[]> Rows);

/// <summary>A query that failed: bad SQL, a refused file access, a limit. The message is one line.</summary>
public sealed class QueryException : Exception
{
    public QueryException(string message) : base(message) { }
    public QueryException() { }
    public QueryException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// An in-process DuckDB over one or many recordings, opened read-only and
/// locked down: views over the recordings' own Parquet files are created
/// first, then the only files DuckDB may touch are those (allowed_paths),
/// external access is off, extensions neither load nor install, memory is
/// limited, and the configuration is locked so that no query can undo this.
/// Each statement runs under a timer that interrupts it.
/// </summary>
public sealed class QuerySession : IDisposable
{
    /// <summary>The event tables, in the order replay lists them.</summary>
    public static readonly IReadOnlyList<string> EventTables = [.. Tables.Events, Tables.Loss];

    private readonly DuckDBConnection _conn;
    private readonly QueryLimits _limits;

    public IReadOnlyList<OpenedRecording> Recordings { get; }

    private QuerySession(DuckDBConnection conn, IReadOnlyList<OpenedRecording> recordings, QueryLimits limits)
    {
        _conn = conn;
        Recordings = recordings;
        _limits = limits;
    }

    /// <summary>Opens the recordings at these paths (see <see cref="RecordingLocator.Open"/>).</summary>
    public static QuerySession Open(IEnumerable<string> paths, QueryOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        var opened = new List<OpenedRecording>();
        try
        {
            options ??= new QueryOptions();
            foreach (var p in paths)
            {
                var rec = RecordingLocator.Open(p, options.Read);
                opened.Add(rec);
                if (options.VerifyFiles)
                    RecordingLocator.EnsureIntact(rec, p);
            }
            var session = Open(opened, options);
            session._owned = opened;
            session._inputs = [.. paths.Select(Path.GetFullPath)];
            return session;
        }
        catch
        {
            foreach (var o in opened)
                o.Dispose();
            throw;
        }
    }

    private List<OpenedRecording> _owned = [];
    private List<string> _inputs = [];

    /// <summary>What an output file may not overwrite or land in: the recordings read (their folders, a bundle file).</summary>
    public IReadOnlyList<string> ProtectedPaths => [.. Recordings.Select(r => r.Root), .. _inputs];

    public static QuerySession Open(IReadOnlyList<OpenedRecording> recordings, QueryOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(recordings);
        options ??= new QueryOptions();
        if (recordings.Count == 0)
            throw new RecordingException("no recording given");
        var dup = recordings.GroupBy(r => r.Manifest.RecordingId).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null)
            throw new RecordingException($"recording {dup.Key} given twice");
        foreach (var r in recordings)
            RecordingLocator.CheckManifest(r.Manifest, r.Root, options.Read);

        var conn = new DuckDBConnection("DataSource=:memory:");
        try
        {
            conn.Open();
            var session = new QuerySession(conn, recordings, options.Limits);
            session.Setup(options);
            return session;
        }
        catch (DuckDBException e)
        {
            conn.Dispose();
            throw new RecordingException($"cannot open the recording: {OneLine(e.Message)}", e);
        }
        catch
        {
            conn.Dispose();
            throw;
        }
    }

    private void Setup(QueryOptions options)
    {
        // Settings that need the file system come before the lock-down.
        Run($"SET threads={Math.Max(1, _limits.Threads)}");
        Run($"SET memory_limit={SqlTypes.Literal(_limits.MemoryLimit)}");
        Run("SET temp_directory=''");
        Run("SET autoinstall_known_extensions=false");
        Run("SET autoload_known_extensions=false");
        TryRun("SET TimeZone='UTC'");

        CreateReferenceTables(options);
        foreach (var table in AllTables())
            Run(ViewSql(table));
        Run(Resources.Text("Sql/macros.sql"));
        Run(Resources.Text("Sql/views.sql"));
        Run(Resources.Text("Sql/flows.sql"));

        var files = Recordings.SelectMany(r => r.Files).Select(f => SqlTypes.Literal(f.FullPath));
        Run($"SET allowed_paths=[{string.Join(", ", files)}]");
        Run("SET allowed_directories=[]");
        Run("SET enable_external_access=false");
        Run("SET allow_community_extensions=false");
        Run("SET lock_configuration=true");
        _allowedTableFunctions = SqlGuard.AllowedTableFunctions(_conn);
    }

    private IReadOnlySet<string> _allowedTableFunctions = new HashSet<string>();

    private IEnumerable<string> AllTables()
    {
        var known = SchemaCatalog.Tables;
        var inManifests = Recordings.SelectMany(r => r.Manifest.Tables.Keys);
        return known.Concat(inManifests).Distinct().Order(StringComparer.Ordinal);
    }

    private void CreateReferenceTables(QueryOptions options)
    {
        var sb = new StringBuilder();
        sb.Append("CREATE TABLE drop_reasons(code INTEGER, name VARCHAR, hubble_name VARCHAR, bpf_define VARCHAR);\n");
        var reasons = DropReasons.All.Select(r => $"({r.Code}, {SqlTypes.Literal(r.Name)}, {SqlTypes.Literal(r.HubbleName)}, {SqlTypes.Literal(r.BpfDefine)})");
        sb.Append("INSERT INTO drop_reasons VALUES ").Append(string.Join(",\n", reasons)).Append(";\n");
        sb.Append("CREATE TABLE kernel_drop_hidden(reason_name VARCHAR, why VARCHAR);\n");
        sb.Append("INSERT INTO kernel_drop_hidden VALUES ")
            .Append(string.Join(", ", KernelDrops.HiddenReasons.Select(r => $"({SqlTypes.Literal(r.Reason)}, {SqlTypes.Literal(r.Why)})"))).Append(";\n");
        sb.Append("CREATE TABLE reserved_identities(identity UINTEGER, labels VARCHAR);\n");
        sb.Append("INSERT INTO reserved_identities VALUES ")
            .Append(string.Join(", ", ReservedIdentities.Labels.Select(kv => $"({kv.Key}, {SqlTypes.Literal(kv.Value)})"))).Append(";\n");
        sb.Append("""
            CREATE TABLE recordings(recording VARCHAR, node VARCHAR, path VARCHAR, hostname VARCHAR, kernel VARCHAR, boot_id VARCHAR,
                tool_version VARCHAR, started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, stop_reason VARCHAR, events_lost BIGINT,
                monotonic_to_utc_offset_ns BIGINT, lab VARCHAR);
            CREATE TABLE manifest_cidrs(recording VARCHAR, cidr VARCHAR, source VARCHAR);
            CREATE TABLE manifest_loss(recording VARCHAR, kind VARCHAR, emitted BIGINT, failed BIGINT, userspace_dropped BIGINT);

            """);
        foreach (var r in Recordings)
        {
            var m = r.Manifest;
            sb.Append(CultureInfo.InvariantCulture, $"INSERT INTO recordings VALUES ({SqlTypes.Literal(m.RecordingId)}, {SqlTypes.Literal(m.Node)}, {SqlTypes.Literal(r.Root)}, ")
              .Append(CultureInfo.InvariantCulture, $"{SqlTypes.Literal(m.Host.Hostname)}, {SqlTypes.Literal(m.Host.Kernel)}, {SqlTypes.Literal(m.Host.BootId)}, {SqlTypes.Literal(m.ToolVersion)}, ")
              .Append(CultureInfo.InvariantCulture, $"{Ts(m.StartedAt)}, {(m.EndedAt is { } e ? Ts(e) : "NULL")}, {SqlTypes.Literal(m.StopReason)}, {m.EventsLost}, ")
              .Append(CultureInfo.InvariantCulture, $"{(m.MonotonicToUtcOffsetNs?.ToString(CultureInfo.InvariantCulture) ?? "NULL")}, {SqlTypes.Literal(m.Config.Lab)});\n");
            foreach (var (source, cidrs) in new[] { ("exclude_cidrs", m.Config.ExcludeCidrs), ("pod_cidrs", m.Config.PodCidrs),
                ("service_cidrs", m.Config.ServiceCidrs), ("node_addresses", m.Config.NodeAddresses) })
                foreach (var c in cidrs)
                    sb.Append(CultureInfo.InvariantCulture, $"INSERT INTO manifest_cidrs VALUES ({SqlTypes.Literal(m.RecordingId)}, {SqlTypes.Literal(c)}, 'manifest {source}');\n");
            foreach (var (kind, l) in m.Loss)
                sb.Append(CultureInfo.InvariantCulture, $"INSERT INTO manifest_loss VALUES ({SqlTypes.Literal(m.RecordingId)}, {SqlTypes.Literal(kind)}, {l.Emitted}, {l.Failed}, {l.UserspaceDropped});\n");
        }
        foreach (var c in options.ClusterCidrs)
            sb.Append(CultureInfo.InvariantCulture, $"INSERT INTO manifest_cidrs VALUES (NULL, {SqlTypes.Literal(c)}, 'option');\n");
        Run(sb.ToString());
    }

    private static string Ts(DateTimeOffset t) => $"TIMESTAMPTZ {SqlTypes.Literal(t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture) + "+00")}";

    /// <summary>One view per table: every recording's files, every supported schema version, cast to the newest schema's types.</summary>
    private string ViewSql(string table)
    {
        var columns = SchemaCatalog.Has(table) ? SchemaCatalog.Current(table).Columns : [];
        var typed = columns.Select(c => $"CAST(NULL AS {SqlTypes.Of(c.Type)}) AS {SqlTypes.Ident(c.Name)}")
            .Concat(HasKernelTime(columns) ? ["CAST(NULL AS BIGINT) AS time_ns"] : [])
            .Append("CAST(NULL AS VARCHAR) AS recording").Append("CAST(NULL AS VARCHAR) AS node");
        var parts = new List<string> { $"SELECT {string.Join(", ", typed)} WHERE false" };
        foreach (var r in Recordings)
            foreach (var g in r.FilesOf(table).GroupBy(f => f.Node))
            {
                var list = string.Join(", ", g.Select(f => SqlTypes.Literal(f.FullPath)));
                var source = $"read_parquet([{list}], union_by_name=true, hive_partitioning=false)";
                var times = Times(columns, r.Manifest.MonotonicToUtcOffsetNs);
                parts.Add($"SELECT *{times}, {SqlTypes.Literal(r.Manifest.RecordingId)} AS recording, {SqlTypes.Literal(g.Key)} AS node FROM {source}");
            }
        // Time columns were already read through expressions (Times): DuckDB cannot push a filter into the scan.
        var casts = columns.Select(c => $"CAST({SqlTypes.Ident(c.Name)} AS {SqlTypes.Of(c.Type)}) AS {SqlTypes.Ident(c.Name)}");
        var replace = columns.Count > 0 ? $" REPLACE ({string.Join(", ", casts)})" : "";
        return $"CREATE VIEW {SqlTypes.Ident(table)} AS SELECT *{replace} FROM ({string.Join("\nUNION ALL BY NAME\n", parts)})";
    }

    private static bool HasKernelTime(IReadOnlyList<ColumnSchema> columns) =>
        columns.Any(c => c.Name == "time" && c.Type.StartsWith("timestamp", StringComparison.Ordinal)) && columns.Any(c => c.Name == "ktime_ns");

    /// <summary>
    /// The time columns of one recording's files, read so that they are true. DuckDB (1.5) reads a Parquet
    /// timestamp[ns, UTC] as TIMESTAMPTZ (microseconds) and takes the row groups' min/max as if they were
    /// microseconds: a time filter then skips every row group and a sort can garble values computed from the
    /// column. So an event's time is derived, exactly as the recorder wrote it (schemas: the kernel's monotonic
    /// stamp converted once with the manifest's offset), from ktime_ns + monotonic_to_utc_offset_ns: `time_ns`
    /// carries it to the nanosecond and `time` is that instant as TIMESTAMPTZ (microseconds). Other time columns
    /// go through text, which drops the bad statistics and keeps the value.
    /// </summary>
    private static string Times(IReadOnlyList<ColumnSchema> columns, long? offsetNs)
    {
        var replace = new List<string>();
        var extra = "";
        foreach (var c in columns.Where(c => c.Type.StartsWith("timestamp", StringComparison.Ordinal)))
        {
            var id = SqlTypes.Ident(c.Name);
            if (c.Name == "time" && HasKernelTime(columns) && offsetNs is { } off)
            {
                var ns = $"(CAST(ktime_ns AS BIGINT) + {off.ToString(CultureInfo.InvariantCulture)})";
                replace.Add($"CAST(make_timestamp({ns} // 1000) AS TIMESTAMPTZ) AS {id}");
                extra = $", {ns} AS time_ns";
            }
            else
            {
                replace.Add($"CAST(CAST({id} AS VARCHAR) AS TIMESTAMPTZ) AS {id}");
                if (c.Name == "time" && HasKernelTime(columns))
                    extra = $", epoch_ns(CAST(CAST({id} AS VARCHAR) AS TIMESTAMPTZ)) AS time_ns"; // no offset: the stored time, to the microsecond
            }
        }
        return (replace.Count > 0 ? $" REPLACE ({string.Join(", ", replace)})" : "") + extra;
    }

    private void Run(string sql)
    {
        using var cmd = _conn.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    private void TryRun(string sql)
    {
        try { Run(sql); }
        catch (DuckDBException) { /* optional setting */ }
    }

    /// <summary>
    /// Runs SQL (one or more queries) and returns the last one's result, of at most
    /// <see cref="QueryLimits.MaxRows"/> rows. Anything but a query is refused.
    /// </summary>
    public QueryResult Execute(string sql)
    {
        ArgumentNullException.ThrowIfNull(sql);
        SqlGuard.Check(_conn, sql, _allowedTableFunctions);
        QueryResult? last = null;
        Read(sql, streaming: false, reader =>
        {
            var cols = Enumerable.Range(0, reader.FieldCount).Select(reader.GetName).ToList();
            var types = Enumerable.Range(0, reader.FieldCount).Select(reader.GetDataTypeName).ToList();
            var rows = new List<object?[]>();
            while (reader.Read())
            {
                if (rows.Count >= _limits.MaxRows)
                    throw new QueryException($"the result has more than {_limits.MaxRows} rows, the limit for results held in memory: add a LIMIT, write --format csv or json (streamed), or raise --max-rows");
                rows.Add(Values(reader));
            }
            last = new QueryResult(cols, types, rows);
        });
        return last ?? new QueryResult([], [], []);
    }

    /// <summary>
    /// Runs SQL and hands the last statement's columns, then each row, to the callbacks as DuckDB
    /// produces them: nothing is held, so no row limit applies; the time limit covers the whole
    /// statement, writing the rows included.
    /// </summary>
    public void Stream(string sql, Action<IReadOnlyList<string>, IReadOnlyList<string>> onColumns, Action<object?[]> onRow)
    {
        ArgumentNullException.ThrowIfNull(sql);
        ArgumentNullException.ThrowIfNull(onColumns);
        ArgumentNullException.ThrowIfNull(onRow);
        SqlGuard.Check(_conn, sql, _allowedTableFunctions);
        Read(sql, streaming: true, reader =>
        {
            onColumns(Enumerable.Range(0, reader.FieldCount).Select(reader.GetName).ToList(),
                Enumerable.Range(0, reader.FieldCount).Select(reader.GetDataTypeName).ToList());
            while (reader.Read())
                onRow(Values(reader));
        });
    }

    /// <summary>
    /// Runs one query and hands its result over as Arrow record batches as DuckDB produces them (DuckDB's own
    /// Arrow conversion of each data chunk, from a streaming result: memory stays bounded whatever the row
    /// count). The schema comes first. Batches are valid only during the call. Under the same time limit as
    /// <see cref="Execute"/>.
    /// </summary>
    public void StreamArrow(string sql, Action<Apache.Arrow.Schema> onSchema, Action<Apache.Arrow.RecordBatch> onBatch)
    {
        ArgumentNullException.ThrowIfNull(sql);
        ArgumentNullException.ThrowIfNull(onSchema);
        ArgumentNullException.ThrowIfNull(onBatch);
        if (SqlGuard.Check(_conn, sql, _allowedTableFunctions) != 1)
            throw new QueryException("Arrow output is one result: give one statement");
        Timed(sql, streaming: true, cmd =>
        {
            using var stream = cmd.ExecuteArrowStream();
            onSchema(stream.Schema);
            while (stream.ReadNextRecordBatchAsync().AsTask().GetAwaiter().GetResult() is { } batch)
            {
                using (batch)
                    onBatch(batch);
            }
        });
    }

    /// <summary>Runs one query and yields each row as column name -> value (blobs as byte[]); at most <see cref="QueryLimits.MaxRows"/> rows.</summary>
    public IEnumerable<Dictionary<string, object?>> Rows(string sql)
    {
        // Materialized per call so that the timer covers the whole read.
        var r = Execute(sql);
        foreach (var row in r.Rows)
        {
            var d = new Dictionary<string, object?>(r.Columns.Count, StringComparer.Ordinal);
            for (var i = 0; i < r.Columns.Count; i++)
                d[r.Columns[i]] = row[i];
            yield return d;
        }
    }

    private void Read(string sql, bool streaming, Action<IDataReader> onResult) => Timed(sql, streaming, cmd =>
    {
        using var reader = cmd.ExecuteReader();
        do
        {
            if (reader.FieldCount > 0)
                onResult(reader);
        } while (reader.NextResult());
    });

    /// <summary>Runs a command under the session's time limit: cancelled when it runs out, DuckDB's errors as one line.</summary>
    private void Timed(string sql, bool streaming, Action<DuckDBCommand> run)
    {
        using var cmd = _conn.CreateCommand();
        cmd.CommandText = sql;
        cmd.UseStreamingMode = streaming;
        var timedOut = false;
        using var timer = new Timer(_ =>
        {
            timedOut = true;
            try { cmd.Cancel(); } catch (ObjectDisposedException) { }
        }, null, _limits.Timeout, Timeout.InfiniteTimeSpan);
        var interrupted = $"query interrupted after the time limit of {_limits.Timeout.TotalSeconds:0.#} s (--timeout)";
        try
        {
            run(cmd);
        }
        catch (OperationCanceledException) when (timedOut)
        {
            throw new QueryException(interrupted);
        }
        catch (DuckDBException e) when (timedOut && e.Message.Contains("nterrupt", StringComparison.Ordinal))
        {
            throw new QueryException(interrupted);
        }
        catch (DuckDBException e)
        {
            throw new QueryException(OneLine(e.Message), e);
        }
        catch (InvalidOperationException e) when (timedOut)
        {
            throw new QueryException(interrupted, e);
        }
    }

    private static object?[] Values(IDataReader reader)
    {
        var values = new object?[reader.FieldCount];
        for (var i = 0; i < values.Length; i++)
        {
            if (reader.IsDBNull(i))
                continue;
            var v = reader.GetValue(i);
            if (v is Stream s)
            {
                using var ms = new MemoryStream();
                s.CopyTo(ms);
                v = ms.ToArray();
            }
            values[i] = v;
        }
        return values;
    }

    /// <summary>DuckDB's message without its multi-line caret context.</summary>
    public static string OneLine(string message)
    {
        var first = message.Split('\n')[0].Trim();
        return first.Length > 0 ? first : message.ReplaceLineEndings(" ");
    }

    public void Dispose()
    {
        _conn.Dispose();
        foreach (var o in _owned)
            o.Dispose();
    }
}
