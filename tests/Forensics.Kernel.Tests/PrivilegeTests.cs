using System.Diagnostics;
using Forensics.Datapath.Lab;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// What `record` really needs when it does not run as root (README, "Prerequisites"): the
/// capabilities are dropped with setpriv (util-linux) and the command runs as nobody.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PrivilegeTests : IDisposable
{
    private readonly string _dir;
    private readonly string _app;

    public PrivilegeTests()
    {
        // nobody must reach the program and write the recording: a world-readable copy of the
        // command, and an output parent nobody can write to.
        _dir = Directory.CreateTempSubdirectory("fx-caps-").FullName;
        File.SetUnixFileMode(_dir, (UnixFileMode)0x1FF);
        _app = Path.Combine(_dir, "app");
        CopyTree(AppContext.BaseDirectory, _app);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        File.SetUnixFileMode(to, (UnixFileMode)0x1ED);
        foreach (var f in Directory.EnumerateFiles(from))
        {
            var name = Path.GetFileName(f);
            if (name.StartsWith("forensics", StringComparison.Ordinal) || name.EndsWith(".dll", StringComparison.Ordinal) && !name.Contains("Test", StringComparison.Ordinal) && !name.StartsWith("xunit", StringComparison.Ordinal))
                File.Copy(f, Path.Combine(to, name));
        }
        var native = Path.Combine(from, "runtimes", "linux-x64");
        if (Directory.Exists(native))
            foreach (var f in Directory.EnumerateFiles(native, "*", SearchOption.AllDirectories))
            {
                var dest = Path.Combine(to, "runtimes", "linux-x64", Path.GetRelativePath(native, f));
                Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
                File.Copy(f, dest);
            }
        foreach (var d in Directory.EnumerateDirectories(to, "*", SearchOption.AllDirectories))
            File.SetUnixFileMode(d, (UnixFileMode)0x1ED);
        foreach (var f in Directory.EnumerateFiles(to, "*", SearchOption.AllDirectories))
            File.SetUnixFileMode(f, (UnixFileMode)0x1A4);
    }

    private (int Code, string Stdout, string Stderr) RecordAsNobody(string caps, string output) =>
        AsNobody(caps, "record", "-d", "2s", "-t", "exec", "-o", output);

    private (int Code, string Stdout, string Stderr) AsNobody(string caps, params string[] command)
    {
        var psi = new ProcessStartInfo("setpriv")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = _dir,
        };
        foreach (var a in new[]
        {
            "--reuid=65534", "--regid=65534", "--clear-groups",
            $"--inh-caps=-all,{caps}", $"--ambient-caps=-all,{caps}", $"--bounding-set=-all,{caps}",
            "--", "dotnet", Path.Combine(_app, "forensics.dll"),
        }.Concat(command))
            psi.ArgumentList.Add(a);
        psi.Environment["HOME"] = _dir;
        psi.Environment["DOTNET_CLI_HOME"] = _dir;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        // execs to record, bounded
        for (var i = 0; i < 20 && !p.HasExited; i++)
        {
            using var t = Process.Start("/bin/true")!;
            t.WaitForExit();
        }
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), "record did not end");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [KernelFact]
    public void Lab_AsNobody_PrerequisiteExitCodeNotAFailure()
    {
        var yaml = Path.Combine(_dir, "lab.yaml");
        File.Copy(LabFixture.Example("starwars.yaml"), yaml);
        File.SetUnixFileMode(yaml, (UnixFileMode)0x1A4);
        foreach (var verb in new[] { "up", "run" })
        {
            var (code, _, stderr) = AsNobody("+bpf,+perfmon,+net_admin", "lab", verb, yaml);
            Assert.Equal(3, code);
            Assert.Equal("error: the lab makes network namespaces, links and routes: it needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); run it with sudo\n", stderr);
        }
    }

    [KernelFact]
    public void Record_AsNobodyWithBpfPerfmonNetAdmin_RefusedNamingWhatIsMissing()
    {
        var output = Path.Combine(_dir, "rec-without");
        var (code, _, stderr) = RecordAsNobody("+bpf,+perfmon,+net_admin", output);
        Assert.Equal(3, code);
        Assert.Matches(@"^error: tracefs is not readable \([^\n]*\): run as root, or grant CAP_DAC_READ_SEARCH besides CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN\n$", stderr);
        Assert.False(Directory.Exists(output), "a record that could not start left its output folder behind");
    }

    [KernelFact]
    public void Record_AsNobodyWithDacReadSearchToo_Records()
    {
        var output = Path.Combine(_dir, "rec-with");
        var (code, stdout, stderr) = RecordAsNobody("+bpf,+perfmon,+net_admin,+dac_read_search", output);
        Assert.True(code is 0 or 4, $"exit {code}: {stderr}");
        Assert.Contains("recorded", stdout, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(output, "manifest.json")));
        Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(output, "exec"), "*.parquet", SearchOption.AllDirectories));
        // Everything in it is the owner's only, whatever the umask: folders 0700, files 0600.
        Assert.Equal((UnixFileMode)0x1C0, File.GetUnixFileMode(output));
        foreach (var d in Directory.EnumerateDirectories(output, "*", SearchOption.AllDirectories))
            Assert.True(File.GetUnixFileMode(d) == (UnixFileMode)0x1C0, $"{d}: {File.GetUnixFileMode(d)}");
        foreach (var f in Directory.EnumerateFiles(output, "*", SearchOption.AllDirectories))
            Assert.True(File.GetUnixFileMode(f) == (UnixFileMode)0x180, $"{f}: {File.GetUnixFileMode(f)}");
    }
    /// <summary>
    /// Issue 16's "no permission": ctnetlink (the kernel's NAT), tc and the probes' maps need CAP_NET_ADMIN, so a
    /// recorder without it is refused before it starts, naming it, and leaves nothing behind.
    /// </summary>
    [KernelFact]
    public void Record_AsNobodyWithoutNetAdmin_RefusedNamingCapNetAdmin()
    {
        var output = Path.Combine(_dir, "rec-no-netadmin");
        var (code, _, stderr) = AsNobody("+bpf,+perfmon,+dac_read_search", "record", "-d", "2s", "-t", "exec,nat", "-o", output);
        Assert.Equal(3, code);
        var line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: insufficient privileges: running as not root and without CAP_NET_ADMIN", line, StringComparison.Ordinal);
        Assert.False(Directory.Exists(output), "a record that could not start left its output folder behind");
    }

    /// <summary>
    /// "No permission" for what a recording reads besides the kernel's probes (issues 15 and 16): a recorder with the
    /// capabilities `record` needs, but neither write access to the runtime's socket nor CAP_SYS_ADMIN (to enter the
    /// node's network namespace given with --netns). Each is one warning line and a line of `info` saying what was not
    /// recorded and why (attribution source: none; NAT in that namespace not recorded), and the rest is recorded: the
    /// processes, and the NAT of the recorder's own namespace.
    /// </summary>
    [KernelFact]
    public void Record_AsNobodyWithoutSocketOrNamespaceAccess_WarnsSaysWhyInInfoAndRecordsTheRest()
    {
        var socketPath = Path.Combine(_dir, "cri.sock");
        using var runtime = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        runtime.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(socketPath));
        runtime.Listen(4);
        File.SetUnixFileMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite); // root's only, as containerd's is
        var netns = "fxpriv-" + Guid.NewGuid().ToString("N")[..6];
        Assert.Equal(0, Commands.Run("ip", ["netns", "add", netns]).ExitCode);
        try
        {
            var output = Path.Combine(_dir, "rec-no-access");
            var (code, _, stderr) = AsNobody("+bpf,+perfmon,+net_admin,+dac_read_search", "record", "-d", "2s", "-t", "exec,nat", "-o", output,
                "--runtime-endpoint", "unix://" + socketPath, "--netns", netns);
            Assert.True(code is 0 or 4, $"exit {code}: {stderr}");
            Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
            var warning = Assert.Single(stderr.Split('\n'), l => l.StartsWith("warning: pod attribution: ", StringComparison.Ordinal));
            Assert.Contains("permission denied", warning, StringComparison.Ordinal);

            var m = Forensics.Format.Manifest.Read(output);
            Assert.Equal("none", m.Attribution!.Source);
            Assert.True(m.Tables["exec"].Rows > 0, "no exec recorded");
            var ct = m.Sources["conntrack"];
            var notRecorded = Assert.Single(ct.NotRecorded, l => l.Contains(netns, StringComparison.Ordinal));
            Assert.StartsWith($"NAT in network namespace {netns} not recorded: ", notRecorded, StringComparison.Ordinal);
            Assert.Contains("CAP_SYS_ADMIN", notRecorded, StringComparison.Ordinal);
            Assert.DoesNotContain(ct.NotRecorded, l => l.Contains("the recorder's network namespace", StringComparison.Ordinal) && l.StartsWith("NAT in", StringComparison.Ordinal));

            var info = LabFixture.RunCli("info", output);
            Assert.Equal(0, info.Code);
            var lines = info.Out.Split('\n');
            Assert.Contains("attribution source: none", lines);
            Assert.Contains(lines, l => l.StartsWith("  warning: ", StringComparison.Ordinal) && l.Contains("permission denied", StringComparison.Ordinal));
            Assert.Single(lines, l => l.Contains(notRecorded, StringComparison.Ordinal));
        }
        finally
        {
            Commands.Run("ip", ["netns", "del", netns]);
        }
    }
}
