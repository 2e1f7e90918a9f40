using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using DuckDB.NET.Data;

namespace Forensics.Query.Bundles;

/// <summary>
/// Applies <see cref="BundleOptions"/> redaction: rewrites the affected Parquet files with DuckDB
/// (COPY (SELECT ...) TO parquet, C# scalar functions for the rewriting), drops excluded tables,
/// updates the manifest's sizes and hashes, and records what was done in its <c>redaction</c> object.
/// Files no option touches are bundled byte for byte.
/// </summary>
internal static partial class Redactor
{
    public const string Mask = "*****";

    public static List<BundleWriter.SourceFile> Apply(JsonObject manifest, string recDir, string work, BundleOptions options)
    {
        var tables = (JsonObject)manifest["tables"]!;
        foreach (var kind in options.Exclude)
        {
            tables.Remove(kind);
        }
        var argRegexes = options.RedactArgs.Select(r => new Regex(r, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(5))).ToList();
        using var pan = options.AnonymizeIps ? CryptoPan.WithRandomKey() : null;
        var sources = new List<BundleWriter.SourceFile>();
        var touched = new SortedSet<string>(StringComparer.Ordinal);
        var typeChanges = new SortedSet<string>(StringComparer.Ordinal);
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        var argsRewritten = argRegexes.Count > 0 || options.DropEnv || pan is not null;
        if (argsRewritten)
        {
            conn.RegisterScalarFunction<string, string>("fx_redact_args", s => RedactArguments(s, argRegexes, options.DropEnv, pan)!);
        }
        if (pan is not null)
        {
            conn.RegisterScalarFunction<string, string>("fx_anon_ip", s => s is null ? null! : pan.AnonymizeText(s));
            conn.RegisterScalarFunction<string, string>("fx_anon_literals", s => s is null ? null! : AnonymizeLiterals(s, pan));
        }

        foreach (var (table, file, path, _, _) in RecordingManifest.Files(manifest).ToList())
        {
            var original = Path.Combine(recDir, path);
            var src = original;
            if (src.IndexOfAny(['*', '?', '[', ']', '{', '}']) >= 0)
            {
                // DuckDB would read glob characters in the recording's path as a pattern.
                src = Path.Combine(work, $"src-{sources.Count}.parquet");
                File.Copy(original, src);
            }
            var select = new List<string>();
            var changed = false;
            foreach (var (col, type) in Columns(conn, src))
            {
                var q = Ident(col);
                string? expr = null;
                var isText = type == "VARCHAR";
                var isTextList = type == "VARCHAR[]";
                if (table == "exec" && col == "arguments" && isText && argsRewritten)
                {
                    expr = $"fx_redact_args({q})";
                }
                else if (options.DropEnv && EnvColumn(col))
                {
                    expr = $"CAST(NULL AS {type})";
                }
                else if (pan is not null && IpColumn(col) && (isText || isTextList))
                {
                    expr = isText ? $"fx_anon_ip({q})" : $"list_transform({q}, x -> fx_anon_ip(x))";
                }
                else if (pan is not null && isText)
                {
                    // any other text may quote addresses: identity labels (cidr:203.0.113.0/24), policies' toCIDR, ...
                    expr = $"fx_anon_literals({q})";
                }
                if (expr is not null)
                {
                    touched.Add($"{table}.{col}");
                    changed = true;
                    select.Add($"{expr} AS {q}");
                }
                else
                {
                    select.Add(q);
                }
            }
            if (!changed)
            {
                sources.Add(new BundleWriter.SourceFile(path, original, (long)file["bytes"]!, (string)file["sha256"]!));
                continue;
            }
            var dst = Path.Combine(work, path);
            Directory.CreateDirectory(Path.GetDirectoryName(dst)!);
            var kv = KvMetadata(conn, src);
            using (var cmd = conn.CreateCommand())
            {
                cmd.CommandText = $"COPY (SELECT {string.Join(", ", select)} FROM read_parquet({Lit(src)}, hive_partitioning = false)) " +
                    $"TO {Lit(dst)} (FORMAT parquet, COMPRESSION zstd{(kv.Length > 0 ? ", KV_METADATA {" + kv + "}" : "")})";
                cmd.ExecuteNonQuery();
            }
            // DuckDB 1.5 has no nanosecond UTC timestamp: a timestamp[ns,UTC] column comes back in
            // microseconds. Say so in the manifest rather than change a type silently.
            var before = PhysicalTypes(conn, src);
            foreach (var (col, t) in PhysicalTypes(conn, dst))
            {
                if (before.TryGetValue(col, out var old) && old != t)
                {
                    typeChanges.Add($"{table}.{col}: {old} -> {t}");
                }
            }
            var bytes = new FileInfo(dst).Length;
            var sha = BundleWriter.HashFile(dst);
            file["bytes"] = bytes;
            file["sha256"] = sha;
            sources.Add(new BundleWriter.SourceFile(path, dst, bytes, sha));
        }

        if (pan is not null && manifest["config"]?["exclude_cidrs"] is JsonArray cidrs)
        {
            for (var i = 0; i < cidrs.Count; i++)
            {
                if (cidrs[i] is JsonValue v && v.TryGetValue<string>(out var s))
                {
                    cidrs[i] = pan.AnonymizeText(s);
                }
            }
            touched.Add("manifest.config.exclude_cidrs");
        }

        if (options.Redacts)
        {
            var red = new JsonObject
            {
                ["redacted_at"] = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture),
                ["columns_rewritten"] = new JsonArray(touched.Select(t => (JsonNode)t).ToArray()),
            };
            if (options.RedactArgs.Count > 0)
            {
                red["redact_args"] = new JsonObject
                {
                    ["patterns"] = new JsonArray(options.RedactArgs.Select(p => (JsonNode)p).ToArray()),
                    ["column"] = "exec.arguments",
                    ["method"] = $"each match of each pattern replaced by {Mask}; when the pattern has capture groups only the groups are (as Tetragon's redactionFilters)",
                };
            }
            if (options.DropEnv)
            {
                red["drop_env"] = new JsonObject
                {
                    ["method"] = $"values of VAR=value arguments in exec.arguments replaced by {Mask}; columns named env/environment set to null",
                };
            }
            if (options.AnonymizeIps)
            {
                red["anonymize_ips"] = new JsonObject
                {
                    ["method"] = "Crypto-PAn prefix-preserving (AES-128), IPv4 and IPv6; CIDRs keep their prefix length",
                    ["key"] = "random, used for this bundle only, not stored",
                    ["columns"] = "every text column with a word ip, ips, ipv4, ipv6, addr(s), address(es), cidr(s), prefix(es), subnet(s), network(s), frontend(s), backend(s), vip, gateway or nexthop in its name; IP literals inside exec.arguments and inside every other text column (identity labels, policies' source text); manifest config.exclude_cidrs",
                };
            }
            if (typeChanges.Count > 0)
            {
                red["type_changes"] = new JsonArray(typeChanges.Select(t => (JsonNode)t).ToArray());
            }
            if (options.Exclude.Count > 0)
            {
                red["excluded_tables"] = new JsonArray(options.Exclude.Select(e => (JsonNode)e).ToArray());
            }
            if (manifest["redaction"] is JsonObject earlier)
            {
                // Bundling an already redacted recording: keep what was done before.
                red["earlier"] = earlier.DeepClone();
            }
            manifest["redaction"] = red;
        }
        return sources;
    }

    /// <summary>
    /// Redacts one arguments string. For each pattern, each match is replaced by *****, or, when the
    /// pattern has capture groups, each captured group within the match (Tetragon's redactionFilters
    /// semantics). With <paramref name="dropEnv"/>, every VAR=value word keeps VAR= and loses its value.
    /// </summary>
    public static string? RedactArguments(string? args, IReadOnlyList<Regex> patterns, bool dropEnv, CryptoPan? pan = null)
    {
        if (args is null)
        {
            return null;
        }
        foreach (var re in patterns)
        {
            args = re.Replace(args, m =>
            {
                var groups = m.Groups.Cast<Group>().Skip(1).Where(g => g.Success && g.Length > 0).OrderBy(g => g.Index).ToList();
                if (groups.Count == 0)
                {
                    return Mask;
                }
                var sb = new StringBuilder();
                var at = m.Index;
                foreach (var g in groups)
                {
                    if (g.Index < at)
                    {
                        continue; // nested group inside one already masked
                    }
                    sb.Append(args, at, g.Index - at).Append(Mask);
                    at = g.Index + g.Length;
                }
                sb.Append(args, at, m.Index + m.Length - at);
                return sb.ToString();
            });
        }
        if (dropEnv)
        {
            args = EnvAssignment().Replace(args, m => m.Groups[1].Value + "=" + Mask);
        }
        if (pan is not null)
        {
            args = IpLiteral().Replace(args, m => System.Net.IPAddress.TryParse(m.Value, out _) ? pan.AnonymizeText(m.Value) : m.Value);
        }
        return args;
    }

    /// <summary>Words that make a text column an address column (src_ip, ipv4, to_cidr, backend_addrs, ...).</summary>
    private static readonly HashSet<string> IpWords = new(StringComparer.Ordinal)
    {
        "ip", "ips", "ipv4", "ipv6", "addr", "addrs", "address", "addresses", "cidr", "cidrs", "prefix", "prefixes",
        "subnet", "subnets", "network", "networks", "frontend", "frontends", "backend", "backends", "vip", "gateway", "nexthop",
    };

    /// <summary>
    /// An address column: one of whose underscore-separated words names an address. Values in it
    /// that are not addresses, CIDRs or lists of them pass through unchanged, so erring wide is safe.
    /// </summary>
    internal static bool IpColumn(string col) => col.Split('_').Any(IpWords.Contains);

    private static bool EnvColumn(string col) => col is "env" or "envs" or "environ" or "environment";

    private static List<(string Name, string Type)> Columns(DuckDBConnection conn, string file)
    {
        using var cmd = conn.CreateCommand();
        cmd.CommandText = $"DESCRIBE SELECT * FROM read_parquet({Lit(file)}, hive_partitioning = false)";
        using var r = cmd.ExecuteReader();
        var list = new List<(string, string)>();
        while (r.Read())
        {
            list.Add((r.GetString(0), r.GetString(1)));
        }
        return list;
    }

    private static Dictionary<string, string> PhysicalTypes(DuckDBConnection conn, string file)
    {
        using var cmd = conn.CreateCommand();
        // what a reader sees: the physical type, the converted type (UINT_32, UTF8) and a timestamp's unit
        // (writers spell the rest differently: Parquet.Net's logical types against DuckDB's rewrite)
        cmd.CommandText = "SELECT name, concat_ws(' ', type, CASE WHEN converted_type NOT LIKE 'TIMESTAMP%' THEN nullif(converted_type, '') END, " +
            $"nullif(regexp_extract(logical_type, '(MILLIS|MICROS|NANOS)=[A-Za-z]+\\(\\)'), '')) FROM parquet_schema({Lit(file)}) WHERE type IS NOT NULL";
        using var r = cmd.ExecuteReader();
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        while (r.Read())
        {
            d[r.GetString(0)] = r.IsDBNull(1) ? "" : r.GetString(1);
        }
        return d;
    }

    private static string KvMetadata(DuckDBConnection conn, string file)
    {
        using var cmd = conn.CreateCommand();
        cmd.CommandText = $"SELECT decode(key), decode(value) FROM parquet_kv_metadata({Lit(file)})";
        using var r = cmd.ExecuteReader();
        var parts = new List<string>();
        while (r.Read())
        {
            var k = r.GetString(0);
            if (k.StartsWith("ARROW:", StringComparison.Ordinal))
            {
                continue; // DuckDB writes its own schema; an Arrow schema of the old file would not match
            }
            parts.Add($"{Lit(k)}: {Lit(r.IsDBNull(1) ? "" : r.GetString(1))}");
        }
        return string.Join(", ", parts);
    }

    private static string Lit(string s) => "'" + s.Replace("'", "''", StringComparison.Ordinal) + "'";

    private static string Ident(string s) => "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>IP literals anywhere in free text (after a colon too, as in cidr:203.0.113.0/24), anonymized.</summary>
    internal static string AnonymizeLiterals(string text, CryptoPan pan)
    {
        text = Ipv4Anywhere().Replace(text, m => System.Net.IPAddress.TryParse(m.Value, out _) ? pan.AnonymizeText(m.Value) : m.Value);
        return IpLiteral().Replace(text, m => m.Value.Contains(':', StringComparison.Ordinal) && System.Net.IPAddress.TryParse(m.Value, out _) ? pan.AnonymizeText(m.Value) : m.Value);
    }

    [GeneratedRegex(@"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d]|\.\d)")]
    private static partial Regex Ipv4Anywhere();

    /// <summary>An IPv4 or IPv6 literal (validated by IPAddress.TryParse before it is replaced).</summary>
    [GeneratedRegex(@"(?<![\w.:])(?:(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})(?![\w:]|\.\d)")]
    private static partial Regex IpLiteral();

    [GeneratedRegex(@"(?<![^\s])([A-Za-z_][A-Za-z0-9_]*)=\S*")]
    private static partial Regex EnvAssignment();
}
