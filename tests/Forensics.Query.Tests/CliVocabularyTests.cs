using System.CommandLine;
using Forensics.Cli;

namespace Forensics.Query.Tests;

/// <summary>
/// docs/cli.md's promises about the command line: one name for one thing in every verb, and
/// every bad value one <c>error:</c> line with exit code 2 before the verb does anything.
/// </summary>
public sealed class CliVocabularyTests : IDisposable
{
    /// <summary>Bad values for every option name any verb has. A new option needs its bad values here.</summary>
    private static readonly Dictionary<string, string[]> BadValues = new(StringComparer.Ordinal)
    {
        ["--output"] = [""],
        ["--format"] = ["xml"],
        ["--types"] = ["nosuch", "drop,nosuch"],
        ["--pod"] = [""],
        ["--namespace"] = [" "],
        ["--since"] = ["yesterday"],
        ["--until"] = ["2026-13-45"],
        ["--duration"] = ["abc", "-1s", "0", "99999999999999h", "1e9s", "50d"],
        ["--timeout"] = ["-1", "0", "forever"],
        ["--memory-limit"] = ["lots", "-1GB"],
        ["--max-rows"] = ["0", "many", "-3"],
        ["--cluster-cidr"] = ["bad", "10.0.0.0/33"],
        ["--no-verify"] = ["=maybe"],
        ["--max-manifest-size"] = ["1X", "0", "2"],
        ["--max-files"] = ["-5", "0"],
        ["--max-extract-size"] = ["big", "0"],
        ["--reason"] = ["99999", " "],
        ["--address"] = ["notanip", "10.0.0.1/8"],
        ["--port"] = ["70000", "0", "x"],
        ["--protocol"] = ["tcpx", "300"],
        ["--process"] = [""],
        ["--external"] = ["=maybe"],
        ["--drops-only"] = ["=maybe"],
        ["--snaplen"] = ["abc", "-1", "100000"],
        ["--ring-size"] = ["3K", "0", "2G", "1T"],
        ["--monitor-aggregation"] = ["high"],
        ["--capture"] = ["some", ""],
        ["--capture-first"] = ["0", "70000", "x"],
        ["--flow-interval"] = ["-1s", "often"],
        ["--exclude-cidr"] = ["bad", "1.2.3.4/40"],
        ["--tetragon-policy"] = ["/nonexistent/policy.yaml", "/dev/null"],
        ["--lab"] = ["/nonexistent/lab.yaml"],
        ["--redact-args"] = ["(unclosed"],
        ["--drop-env"] = ["=maybe"],
        ["--anonymize-ips"] = ["=maybe"],
        ["--exclude"] = ["../etc"],
        ["--sign-key"] = ["/nonexistent/key"],
        ["--append-note"] = [""],
        ["--allowed-signers"] = ["/nonexistent/allowed"],
        ["--key"] = ["/nonexistent/key.pub"],
        ["--root"] = ["xyz"],
        ["--name"] = ["Bad_Name"],
        ["--no-datapath"] = ["=maybe"],
        ["--events"] = ["=maybe"],
        ["--step"] = [""],
        ["--max-pods"] = ["0", "lots"],
        ["--l7"] = ["proxy", ""],
        ["--from"] = ["kafka", "hubble="],
        ["--tls"] = ["=maybe"],
        ["--tls-allow-insecure"] = ["=maybe"],
        ["--tls-ca-cert-files"] = ["/nonexistent/ca.pem"],
        ["--tls-client-cert-file"] = ["/nonexistent/cert.pem"],
        ["--tls-client-key-file"] = ["/nonexistent/key.pem"],
        ["--tls-server-name"] = [" "],
        ["--policy"] = ["/nonexistent/policy.yaml"],
        ["--remove-policy"] = [" "],
        ["--changed-only"] = ["=maybe"],
        ["--datapath"] = [" "],
        ["--to"] = ["x", "70000"],
        ["--related-to"] = ["-1"],
        ["--verbose"] = ["=maybe"],
        ["--runtime-endpoint"] = [" "],
        ["--pods-file"] = ["/nonexistent/pods.json"],
        ["--services-file"] = ["/nonexistent/svc.json"],
        ["--netns"] = ["fx-no-such-netns", " "],
        ["--all-reasons"] = ["=maybe"],
    };

    private readonly string _dir = Directory.CreateTempSubdirectory("fx-vocab-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Every visible verb (lab's hidden serve and connect are run by the lab itself).</summary>
    private static IEnumerable<(string[] Path, Command Command)> Verbs(Command c, string[] path)
    {
        foreach (var sub in c.Subcommands.Where(s => !s.Hidden))
        {
            string[] p = [.. path, sub.Name];
            if (sub.Subcommands.Count == 0)
                yield return (p, sub);
            foreach (var v in Verbs(sub, p))
                yield return v;
        }
    }

    /// <summary>Arguments (and required options) that parse, so that only the option under test is wrong.</summary>
    private string[] Positionals(Command c, Option tested)
    {
        var yaml = Path.Combine(_dir, "lab.yaml");
        File.WriteAllText(yaml, "kind: Lab\n");
        var args = c.Arguments.SelectMany(a => a.Name switch
        {
            "FILE" => new[] { yaml },
            _ => [_dir],
        }).ToList();
        foreach (var o in c.Options.Where(o => o.Required && o != tested))
            args.AddRange([o.Name, Path.Combine(_dir, "out")]);
        return [.. args];
    }

    [Fact]
    public void EveryOption_BadValue_OneUsageLine()
    {
        var root = Cli.ForensicsCommand.Build();
        var missing = new List<string>();
        var passed = new List<string>();
        var cases = 0;
        foreach (var (path, cmd) in Verbs(root, []))
        {
            foreach (var option in cmd.Options.Where(o => o.Name is not ("--help" or "-h" or "-?" or "--version")))
            {
                if (!BadValues.TryGetValue(option.Name, out var values))
                {
                    missing.Add($"{string.Join(' ', path)} {option.Name}");
                    continue;
                }
                foreach (var v in values)
                {
                    string[] args = v.StartsWith('=')
                        ? [.. path, .. Positionals(cmd, option), option.Name + v]
                        : [.. path, .. Positionals(cmd, option), option.Name, v];
                    cases++;
                    var error = Cli.ForensicsCommand.UsageError(root.Parse(args), args);
                    if (error is null || error.Contains('\n', StringComparison.Ordinal) || !error.Contains(option.Name.TrimStart('-'), StringComparison.Ordinal) && !error.Contains("not one of", StringComparison.Ordinal))
                        passed.Add($"{string.Join(' ', args)} => {error ?? "(parsed)"}");
                }
            }
        }
        Assert.True(missing.Count == 0, "options without bad values in this test (add them): " + string.Join("; ", missing));
        Assert.True(passed.Count == 0, "bad values that did not make one usage line naming the option:\n" + string.Join("\n", passed));
        Assert.True(cases > 150, $"only {cases} cases");
    }

    [Fact]
    public void OneName_OneMeaning_AcrossVerbs()
    {
        // The same option name takes the same aliases everywhere (docs/cli.md's table).
        var byName = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var (_, cmd) in Verbs(Cli.ForensicsCommand.Build(), []))
            foreach (var o in cmd.Options)
            {
                if (!byName.TryGetValue(o.Name, out var set))
                    byName[o.Name] = set = new HashSet<string>(o.Aliases, StringComparer.Ordinal);
                Assert.True(set.SetEquals(o.Aliases), $"{cmd.Name} {o.Name}: aliases {string.Join(",", o.Aliases)} differ from another verb's {string.Join(",", set)}");
            }
        Assert.Equal(["-o"], byName["--output"]);
        Assert.Equal(["-f"], byName["--format"]);
        Assert.Equal(["-t"], byName["--types"]);
        Assert.Equal(["-n"], byName["--namespace"]);
        Assert.Equal(["-d"], byName["--duration"]);
        foreach (var old in new[] { "--type", "--pods", "--processes", "--pcap" })
            Assert.False(byName.ContainsKey(old), $"{old} is not in the vocabulary");
    }

    [Fact]
    public void FileOptions_DirectoryOrDanglingLink_SaidAsSuch()
    {
        var dangling = Path.Combine(_dir, "dangling.yaml");
        File.CreateSymbolicLink(dangling, Path.Combine(_dir, "gone.yaml"));
        string[][] verbs =
        [
            ["record", "--tetragon-policy"], ["record", "--lab"], ["record", "--pods-file"], ["record", "--tls-ca-cert-files"],
            ["whatif", _dir, "--policy"], ["bundle", _dir, "-o", Path.Combine(_dir, "b.fxb"), "--sign-key"],
        ];
        foreach (var v in verbs)
        {
            var name = v[^1];
            Assert.Equal($"{name}: {_dir}: is a directory", UsageError([.. v, _dir]));
            Assert.Equal($"{name}: {dangling}: a symbolic link that leads nowhere", UsageError([.. v, dangling]));
        }
        Assert.Equal($"{_dir}: is a directory", UsageError(["lab", "run", _dir]));
    }

    private static string? UsageError(string[] args) => Cli.ForensicsCommand.UsageError(Cli.ForensicsCommand.Build().Parse(args), args);

    [Theory]
    [InlineData("error: --snaplen: 'abc' is not a whole number from 0 to 256", "record", "--snaplen", "abc")]
    [InlineData("error: --monitor-aggregation: 'high' is not one of medium, none", "record", "--monitor-aggregation", "high")]
    [InlineData("error: --l7: 'proxy' is not one of allow, deny", "lab", "run", "x.yaml", "--l7", "proxy")]
    [InlineData("error: --ring-size: 3K is not a power of two between 4K and 1G", "record", "--ring-size", "3K")]
    [InlineData("error: --exclude-cidr: '10.0.0.0/99' is not an IPv4 or IPv6 address or CIDR", "record", "--exclude-cidr", "10.0.0.0/99")]
    [InlineData("error: --cluster-cidr: 'bad' is not an IPv4 or IPv6 address or CIDR", "drops", "/tmp", "--cluster-cidr", "bad")]
    [InlineData("error: unknown option '--bogus' (--help lists the options)", "info", "/tmp", "--bogus")]
    [InlineData("error: unexpected argument 'nosuch' (--help shows the usage)", "nosuch")]
    [InlineData("error: no verb given (forensics --help lists them)")]
    public void Process_BadCommandLine_OneLineExit2(string expected, params string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal(expected + "\n", r.Stderr);
        Assert.Equal("", r.Stdout);
    }
}
