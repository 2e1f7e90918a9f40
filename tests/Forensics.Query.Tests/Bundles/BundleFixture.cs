using System.Diagnostics;
using Forensics.Query.Bundles;

namespace Forensics.Query.Tests.Bundles;

[CollectionDefinition("bundles", DisableParallelization = true)]
public sealed class BundleCollection;

/// <summary>Temp folder, ssh keys and helpers shared by the bundle tests.</summary>
internal sealed class Scratch : IDisposable
{
    public Scratch() => Dir = Directory.CreateTempSubdirectory("fx-test-bundle-").FullName;

    public string Dir { get; }

    public string PathOf(string name) => Path.Combine(Dir, name);

    /// <summary>Makes an SSH key pair with the real ssh-keygen; returns the private key path.</summary>
    public string SshKey(string name, string type = "ed25519", string comment = "alice@example")
    {
        var key = PathOf(name);
        var args = new List<string> { "-q", "-t", type, "-N", "", "-C", comment, "-f", key };
        if (type == "rsa")
        {
            args.InsertRange(0, ["-b", "2048"]);
        }
        var (rc, _, err) = Run("ssh-keygen", args, null);
        Assert.True(rc == 0, "ssh-keygen failed: " + err);
        return key;
    }

    /// <summary>An allowed_signers line trusting the key for principal <paramref name="who"/>.</summary>
    public string AllowedSigners(string who, params string[] privateKeys)
    {
        var f = PathOf("allowed_signers-" + Guid.NewGuid().ToString("N")[..6]);
        File.WriteAllLines(f, privateKeys.Select(k =>
        {
            var pub = File.ReadAllText(k + ".pub").Trim().Split(' ');
            return $"{who} namespaces=\"forensics\" {pub[0]} {pub[1]}";
        }));
        return f;
    }

    public static (int Rc, string Out, string Err) Run(string exe, IEnumerable<string> args, byte[]? stdin)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi)!;
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            p.StandardInput.BaseStream.Write(stdin);
        }
        p.StandardInput.Close();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)), $"{exe} did not finish");
        return (p.ExitCode, o.Result, e.Result);
    }

    /// <summary>Runs the real forensics command (the built forensics.dll) in a child process.</summary>
    public static (int Rc, string Out, string Err) Forensics(params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "forensics.dll");
        return Run("dotnet", [dll, .. args], null);
    }

    public static BundleError Fails(string bundle, VerifyOptions? options = null) =>
        Assert.Throws<BundleException>(() => BundleReader.Verify(bundle, options)).Error;

    public void Dispose()
    {
        try
        {
            Directory.Delete(Dir, true);
        }
        catch (IOException)
        {
        }
    }
}
