using System.Diagnostics;
using System.Net;

namespace Forensics.Datapath.Cluster;

/// <summary>
/// kube-proxy's rules as this node has them loaded: <c>iptables-save -t nat</c> and <c>nft list ruleset</c>
/// run in a network namespace (null: the recorder's own), read back by <see cref="KubeProxyRuleReader"/>.
/// A tool that is missing, fails or takes longer than a few seconds gives nothing (the rules are only
/// names for what conntrack records; the line of <see cref="Problems"/> says why).
/// </summary>
public static class KubeProxyRules
{
    /// <summary>
    /// Service ports from both rule sets, iptables first (an address:port named twice keeps the first name), and
    /// the pod CIDRs kube-proxy was given (--cluster-cidr).
    /// </summary>
    public static (IReadOnlyList<ServiceFrontend> Services, IReadOnlyList<IPNetwork> PodCidrs, IReadOnlyList<string> Problems) Read(string? netnsPath = null)
    {
        var services = new List<ServiceFrontend>();
        var podCidrs = new List<IPNetwork>();
        var problems = new List<string>();
        var seen = new HashSet<(string, int, string)>();
        void Add(ClusterServices found)
        {
            foreach (var c in found.PodCidrs)
                if (!podCidrs.Contains(c))
                    podCidrs.Add(c);
            foreach (var s in found.Services)
                if (seen.Add((s.Ip.ToString(), s.Port, s.Protocol.ToLowerInvariant())))
                    services.Add(s);
        }
        if (Run(netnsPath, "iptables-save", ["-t", "nat"], problems) is { } ipt)
            Add(KubeProxyRuleReader.ParseIptablesSave(ipt));
        if (Run(netnsPath, "nft", ["list", "ruleset"], problems) is { } nft)
            Add(KubeProxyRuleReader.ParseNftRuleset(nft));
        return (services, podCidrs, problems);
    }

    private static string? Run(string? netnsPath, string tool, string[] args, List<string> problems)
    {
        var psi = new ProcessStartInfo(netnsPath is null ? tool : "nsenter")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (netnsPath is not null)
        {
            psi.ArgumentList.Add("--net=" + netnsPath);
            psi.ArgumentList.Add(tool);
        }
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi);
            if (p is null)
                return null;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(5000))
            {
                p.Kill(entireProcessTree: true);
                problems.Add($"{tool} did not answer within 5 s");
                return null;
            }
            if (p.ExitCode != 0)
            {
                problems.Add($"{tool} failed: {stderr.Result.Split('\n')[0].Trim()}");
                return null;
            }
            return stdout.Result;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null; // not installed: no rules of that kind
        }
    }
}
