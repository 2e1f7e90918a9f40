using System.Text.RegularExpressions;
using DuckDB.NET.Data;
using Forensics.Cli;
using Forensics.Datapath;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Probes;
using Forensics.Format;
using Forensics.Query.Bundles;
using Forensics.Query.Recording;
using Forensics.Tests;

namespace Forensics.Query.Tests;

/// <summary>
/// docs/cli.md's table from exception to exit code is the one <see cref="ForensicsCommand.Classify"/> applies: every row's
/// exceptions, thrown as a verb would throw them, get the row's code, and the table names no exception this test does not throw.
/// </summary>
public sealed partial class ExitCodeTableTests
{
    /// <summary>The table's rows: the exception cell and the code cell.</summary>
    private static List<(string Exceptions, string Code)> DocRows()
    {
        var lines = File.ReadAllLines(Repo.Path("docs", "cli.md"));
        var start = Array.FindIndex(lines, l => l.StartsWith("| exception | code |", StringComparison.Ordinal));
        Assert.True(start >= 0, "docs/cli.md has no exception -> exit code table");
        var rows = new List<(string, string)>();
        for (var i = start + 2; i < lines.Length && lines[i].StartsWith('|'); i++)
        {
            var cells = lines[i].Split('|', StringSplitOptions.TrimEntries);
            rows.Add((cells[1], cells[2]));
        }
        return rows;
    }

    private static DuckDBException DuckDbError()
    {
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = "SELECT no_such_column";
        return Assert.Throws<DuckDBException>(() => cmd.ExecuteScalar());
    }

    /// <summary>(words of a row's exception cell, an exception a verb throws, the code that row gives).</summary>
    private static IEnumerable<(string Phrase, Exception Thrown, int Code)> Cases()
    {
        yield return ("`UsageException`", new UsageException("bad"), 2);
        yield return ("`PrerequisiteException`", new PrerequisiteException("no BTF"), 3);
        yield return ("`BpfException` with EPERM or EACCES", new BpfException("bpf_object__load", 1), 3);
        yield return ("`BpfException` with EPERM or EACCES", new BpfException("bpf_object__load", 13), 3);
        yield return ("`IOException` with ENOSPC", new IOException("No space left on device", 28), 5);
        yield return ("`RecordingTamperedException`", new RecordingTamperedException("differs"), 6);
        yield return ("`RecordingException`", new RecordingException("not a recording"), 7);
        yield return ("`ManifestException`", new ManifestException("manifest.json: not JSON"), 7);
        yield return ("`ClusterSpecException`", new ClusterSpecException("bad YAML"), 7);
        yield return ("`TracingPolicyException`", new TracingPolicyException("bad policy"), 7);
        yield return ("`FileNotFoundException`", new FileNotFoundException("gone"), 7);
        yield return ("`DirectoryNotFoundException`", new DirectoryNotFoundException("gone"), 7);
        yield return ("`ArgumentException`", new ArgumentException("too many CIDRs"), 7);
        yield return ("`InvalidDataException`", new InvalidDataException("bad file"), 7);
        yield return ("`FormatException`", new FormatException("bad number"), 7);
        yield return ("`QueryException`", new QueryException("limit"), 1);
        yield return ("DuckDB's exception", DuckDbError(), 1);
        yield return ("`LabException`", new LabException("step missed"), 1);
        yield return ("other `BpfException`", new BpfException("bpf_map_update_elem", 2), 1);
        yield return ("other `IOException`", new IOException("broken pipe"), 1);
        yield return ("`UnauthorizedAccessException`", new UnauthorizedAccessException("denied"), 1);
        yield return ("`OperationCanceledException`", new OperationCanceledException(), 130);
        yield return ("`ArgumentNullException`", new ArgumentNullException("x"), 1);
        yield return ("anything else", new InvalidOperationException("oops"), 1);
    }

    [GeneratedRegex("^[0-9]+")]
    private static partial Regex LeadingNumber();

    [GeneratedRegex("`[A-Za-z]+`")]
    private static partial Regex Backticked();

    [Fact]
    public void Classify_EveryRowOfTheDocsTable_GivesItsCode()
    {
        var rows = DocRows();
        foreach (var (phrase, thrown, code) in Cases())
        {
            var row = Assert.Single(rows, r => r.Exceptions.Contains(phrase, StringComparison.Ordinal));
            var number = LeadingNumber().Match(row.Code);
            Assert.True(number.Success, $"row '{row.Exceptions}': code '{row.Code}' is not a number");
            var documented = int.Parse(number.Value, System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(documented, code);
            var (got, message) = ForensicsCommand.Classify(thrown);
            Assert.True((int)got == code, $"{thrown.GetType().Name} ({phrase}): Classify gives {(int)got}, docs/cli.md says {code}");
            Assert.DoesNotContain('\n', message);
        }
    }

    [Fact]
    public void Classify_ABundleException_ItsOwnCode()
    {
        var row = Assert.Single(DocRows(), r => r.Exceptions.Contains("`BundleException`", StringComparison.Ordinal));
        Assert.Equal("its `BundleError` (10..23)", row.Code);
        foreach (var error in Enum.GetValues<BundleError>())
        {
            Assert.InRange((int)error, 10, 23);
            Assert.Equal((int)error, (int)ForensicsCommand.Classify(new BundleException(error, "damaged")).Code);
        }
    }

    [Fact]
    public void Classify_AnExceptionNotOurs_InternalErrorNamingIt()
    {
        Assert.Equal((ExitCode.Failure, "internal error (InvalidOperationException): oops"), ForensicsCommand.Classify(new InvalidOperationException("oops")));
        // a task's or a reflection call's wrapper is looked through
        Assert.Equal(ExitCode.BadInput, ForensicsCommand.Classify(new AggregateException(new RecordingException("r"))).Code);
        Assert.Equal(ExitCode.Prerequisite, ForensicsCommand.Classify(new System.Reflection.TargetInvocationException(new PrerequisiteException("p"))).Code);
    }

    [Fact]
    public void DocsTable_NamesOnlyExceptionsThisTestThrows()
    {
        var tested = Cases().Select(c => c.Phrase).Append("`BundleException`").Append("`BundleError`").ToList();
        foreach (var (cell, code) in DocRows())
            foreach (Match m in Backticked().Matches(cell + " " + code))
                Assert.True(tested.Exists(p => p.Contains(m.Value, StringComparison.Ordinal)), $"docs/cli.md names {m.Value}; add it to Cases()");
    }

    [Fact]
    public void ExitCodes_TheDocsTableAndHelp_ListEveryCode()
    {
        // docs/cli.md's table of codes: every ExitCode and the bundle range, nothing else; forensics --help says each too
        var lines = File.ReadAllLines(Repo.Path("docs", "cli.md"));
        var start = Array.FindIndex(lines, l => l.StartsWith("| code | meaning |", StringComparison.Ordinal));
        Assert.True(start >= 0, "docs/cli.md has no table of exit codes");
        var documented = new SortedSet<int>();
        for (var i = start + 2; i < lines.Length && lines[i].StartsWith('|'); i++)
        {
            var code = lines[i].Split('|', StringSplitOptions.TrimEntries)[1];
            if (code == "10..23")
                documented.UnionWith(Enumerable.Range(10, 14));
            else
                documented.Add(int.Parse(code, System.Globalization.CultureInfo.InvariantCulture));
        }
        var codes = new SortedSet<int>(Enum.GetValues<ExitCode>().Select(c => (int)c).Concat(Enum.GetValues<BundleError>().Select(e => (int)e)));
        codes.UnionWith(Enumerable.Range(10, 14));
        Assert.Equal(codes, documented);
        foreach (var c in Enum.GetValues<ExitCode>())
            Assert.Matches($@"(^|[;:] ?|\s){(int)c} ", ForensicsCommand.ExitCodesText.ReplaceLineEndings(" "));
    }
}
