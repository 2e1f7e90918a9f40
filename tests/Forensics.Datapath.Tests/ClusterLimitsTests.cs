using System.Text;
using Forensics.Datapath.Control;

namespace Forensics.Datapath.Tests;

/// <summary>A cluster YAML may come from someone else: what it can cost is bounded, each refusal one line.</summary>
public sealed class ClusterLimitsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fx-yaml-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static int _ip;

    private static string Pod(string name, string labels = "{app: a}") => $"""
        apiVersion: v1
        kind: Pod
        metadata:
          name: {name}
          labels: {labels}
        status:
          podIP: 10.0.{Interlocked.Increment(ref _ip) / 250}.{_ip % 250 + 1}
        ---

        """;

    [Fact]
    public void Load_NestedDeeperThanTheLimit_OneLineNotAStackOverflow()
    {
        // YamlDotNet builds its tree recursively: 100,000 levels used to overflow the stack and abort the process.
        var yaml = new string('[', 100_000) + new string(']', 100_000);
        var e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.Load(yaml, "deep.yaml"));
        Assert.Equal("deep.yaml:1: document 1: nested more than 64 deep", e.Message);
    }

    [Fact]
    public void TracingPolicy_NestedDeeperThanTheLimit_OneLineNotAStackOverflow()
    {
        var e = Assert.Throws<Forensics.Datapath.Probes.TracingPolicyException>(() =>
            Forensics.Datapath.Probes.TracingPolicyReader.Parse("spec: " + new string('[', 100_000) + new string(']', 100_000)));
        Assert.Equal("the TracingPolicy:1: document 1: nested more than 64 deep", e.Message);
    }

    [Fact]
    public void Load_AliasesExpandingToABillionNodes_Refused()
    {
        var sb = new StringBuilder("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (var i = 1; i < 9; i++)
            sb.Append(System.Globalization.CultureInfo.InvariantCulture, $"{(char)('a' + i)}: &{(char)('a' + i)} [{string.Join(", ", Enumerable.Repeat("*" + (char)('a' + i - 1), 10))}]\n");
        var e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.Load(sb.ToString(), "bomb.yaml"));
        Assert.Contains("more than 1000000 nodes with its aliases expanded", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_LabelValueLongerThanKubernetesAllows_Refused()
    {
        var e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.Load(Pod("a", "{app: " + new string('v', 64) + "}"), "labels.yaml"));
        Assert.Contains("label app: the value is 64 characters, more than Kubernetes allows (63)", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        // 63 is fine.
        Assert.Single(ClusterLoader.Load(Pod("a", "{app: " + new string('v', 63) + "}"), "labels.yaml").Pods);
    }

    [Fact]
    public void Load_MorePodsThanTheLimit_RefusedAndTheLimitRaisable()
    {
        var yaml = string.Concat(Enumerable.Range(0, 12).Select(i => Pod($"p{i}")));
        var e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.Load(yaml, "pods.yaml", ClusterLimits.Default with { MaxPods = 10 }));
        Assert.Contains("more than 10 pods (--max-pods raises the limit)", e.Message, StringComparison.Ordinal);
        Assert.Equal(12, ClusterLoader.Load(yaml, "pods.yaml", ClusterLimits.Default with { MaxPods = 12 }).Pods.Count);
    }

    [Fact]
    public void LoadFile_FifoOrOversizedFile_RefusedWithoutWaiting()
    {
        var fifo = Path.Combine(_dir, "fifo.yaml");
        using (var p = System.Diagnostics.Process.Start("mkfifo", fifo))
            p.WaitForExit();
        var e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.LoadFile(fifo));
        Assert.Equal($"{fifo}: cannot read: {fifo}: is a FIFO, not a regular file", e.Message);
        var big = Path.Combine(_dir, "big.yaml");
        using (var fs = File.Create(big))
            fs.SetLength(17L << 20);
        e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.LoadFile(big));
        Assert.Contains("more than the 16777216 a file of this kind may have", e.Message, StringComparison.Ordinal);
    }
}
