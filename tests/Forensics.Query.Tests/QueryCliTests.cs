using System.Text.Json;

namespace Forensics.Query.Tests;

public sealed class QueryCliTests : IDisposable
{
    private readonly TestRecording _rec = Lab.Build();
    private readonly string _out = Path.Combine(Path.GetTempPath(), "fxq-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        _rec.Dispose();
        if (File.Exists(_out))
            File.Delete(_out);
    }

    [Fact]
    public void Query_Table_AlignedColumns()
    {
        var r = CliRunner.Run("query", _rec.Root, "SELECT pod, count(*) AS n FROM exec GROUP BY pod");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("pod    n\n-----  -\nxwing  2\n(1 row)\n", r.Stdout);
    }

    [Fact]
    public void Query_CsvJsonParquet_WriteTheRows()
    {
        var csv = CliRunner.Run("query", _rec.Root, "SELECT reason, reason_name FROM \"drop\" LIMIT 1", "--format", "csv");
        Assert.Equal("reason,reason_name\n133,Policy denied\n", csv.Stdout);
        var json = CliRunner.Run("query", _rec.Root, "SELECT exec_id, \"binary\", time FROM exec ORDER BY time", "--format", "json");
        var first = JsonDocument.Parse(json.Stdout.Split('\n')[0]).RootElement;
        Assert.Equal(5001ul, first.GetProperty("exec_id").GetUInt64());
        Assert.Equal("2026-11-23T10:00:01.000500Z", first.GetProperty("time").GetString()); // a TIMESTAMPTZ has microseconds: printed as such
        var pq = CliRunner.Run("query", _rec.Root, "SELECT src_port, data, time FROM capture ORDER BY ktime_ns", "--format", "parquet", "--output", _out);
        Assert.Equal(0, pq.ExitCode);
        using var c = new DuckDB.NET.Data.DuckDBConnection("DataSource=:memory:");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = $"SELECT count(*), min(src_port), typeof(min(src_port)), octet_length(min(data)), typeof(min(time)) FROM read_parquet('{_out}')";
        using var rd = cmd.ExecuteReader();
        Assert.True(rd.Read());
        Assert.Equal(2L, rd.GetInt64(0));
        Assert.Equal("USMALLINT", rd.GetString(2));
        Assert.Equal(54L, rd.GetInt64(3));
        Assert.Equal("TIMESTAMP WITH TIME ZONE", rd.GetString(4));
    }

    [Fact]
    public void Query_SqlOnStdin_RunsIt()
    {
        var r = CliRunner.RunWithInput("SELECT count(*) AS n FROM connect;", "query", _rec.Root, "--format", "csv");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("n\n3\n", r.Stdout);
    }

    [Fact]
    public void Query_BadSqlAndBadRecording_OneLineErrors()
    {
        var bad = CliRunner.Run("query", _rec.Root, "SELECT FROM WHERE");
        Assert.Equal(1, bad.ExitCode);
        Assert.Matches(@"^error: Parser Error: [^\n]*\n$", bad.Stderr);
        var none = CliRunner.Run("query", "/nonexistent/rec", "SELECT 1");
        Assert.Equal(7, none.ExitCode);
        Assert.Equal("error: /nonexistent/rec: no such recording\n", none.Stderr);
        var parquet = CliRunner.Run("query", _rec.Root, "SELECT 1", "--format", "parquet");
        Assert.Equal(1, parquet.ExitCode);
        Assert.Equal("error: --format parquet needs --output FILE\n", parquet.Stderr);
    }

    [Fact]
    public void Query_TwoRecordings_ColumnsTellThemApart()
    {
        using var b = Lab.Build("node-b");
        var r = CliRunner.Run("query", _rec.Root, b.Root, "SELECT node, count(*) AS n FROM \"drop\" GROUP BY node ORDER BY node", "--format", "csv");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("node,n\nnode-a,3\nnode-b,3\n", r.Stdout);
    }
}

public sealed class InteractiveTests
{
    [Fact]
    public void Query_NoSqlOnATerminal_PromptsUntilSemicolonAndQuits()
    {
        using var rec = Lab.Build();
        // script(1) gives the command a pseudo-terminal, so it sees a terminal on stdin.
        var r = CliRunner.RunProgram("script", "SELECT count(*) AS n\n  FROM \"drop\";\nSELEC oops;\n.quit\n",
            "-qec", $"{CliRunner.Forensics} query {rec.Root}", "/dev/null");
        Assert.Equal(0, r.ExitCode);
        var output = r.Stdout.Replace("\r", "", StringComparison.Ordinal);
        Assert.Contains("forensics> ", output, StringComparison.Ordinal);
        Assert.Contains("      ...> ", output, StringComparison.Ordinal);
        Assert.Contains("n\n-\n3\n(1 row)\n", output, StringComparison.Ordinal);
        Assert.Contains("error: Parser Error: syntax error at or near \"SELEC\"", output, StringComparison.Ordinal);
    }
}

public sealed class PromptTests
{
    [Fact]
    public void Prompt_UnknownDotCommand_OneErrorAndQuitStillQuits()
    {
        using var rec = Lab.Build();
        var r = CliRunner.RunProgram("script", ".foo\n.quit\n", "-qec", $"{CliRunner.Forensics} query {rec.Root}", "/dev/null");
        Assert.Equal(0, r.ExitCode);
        var output = r.Stdout.Replace("\r", "", StringComparison.Ordinal);
        Assert.Contains("error: unknown command .foo (.tables, .quit)", output, StringComparison.Ordinal);
        Assert.DoesNotContain("...> ", output, StringComparison.Ordinal);
    }
}

public sealed class HelpTests
{
    /// <summary>Every visible command under the root, as typed ("lab up"), walked from the command tree: a new verb needs its golden file.</summary>
    public static TheoryData<string> Verbs()
    {
        var data = new TheoryData<string>();
        void Walk(System.CommandLine.Command c, string path)
        {
            foreach (var sub in c.Subcommands.Where(s => !s.Hidden))
            {
                var p = path.Length == 0 ? sub.Name : path + " " + sub.Name;
                data.Add(p);
                Walk(sub, p);
            }
        }
        Walk(Cli.ForensicsCommand.Build(), "");
        return data;
    }

    [Theory]
    [MemberData(nameof(Verbs))]
    public void Help_Verb_MatchesGolden(string verb)
    {
        var r = CliRunner.Run([.. verb.Split(' '), "--help"]);
        Assert.Equal(0, r.ExitCode);
        Golden.Assert($"help_{verb.Replace(' ', '_')}.txt", r.Stdout);
    }

    [Fact]
    public void Help_Root_MatchesGolden()
    {
        var r = CliRunner.Run("--help");
        Assert.Equal(0, r.ExitCode);
        Golden.Assert("help.txt", r.Stdout);
    }
}
