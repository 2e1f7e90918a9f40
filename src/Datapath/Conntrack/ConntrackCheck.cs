using System.Globalization;

namespace Forensics.Datapath.Conntrack;

/// <summary>What <c>forensics doctor</c> says about recording the kernel's NAT: the sysctls, and whether ctnetlink answers.</summary>
public static class ConntrackCheck
{
    /// <summary>One finding: a line to print, and whether it is something to fix.</summary>
    public readonly record struct Finding(string Text, bool Warning);

    /// <summary>Checks the namespace (null: this process's) and returns one line per finding.</summary>
    public static IReadOnlyList<Finding> Run(string? netnsPath = null)
    {
        var findings = new List<Finding>();
        ConntrackListener listener;
        try
        {
            listener = ConntrackListener.Open(new ConntrackOptions { NetnsPath = netnsPath, ReceiveBufferBytes = 0 });
        }
        catch (ConntrackException e)
        {
            findings.Add(new Finding($"conntrack: NAT done by the kernel will not be recorded: {e.Message}", true));
            return findings;
        }
        using (listener)
        {
            var s = listener.Sysctls;
            if (s.Events is null)
            {
                findings.Add(new Finding("conntrack: the kernel has no net.netfilter.nf_conntrack_events here (connection tracking is not in this kernel or namespace): nothing the kernel translates can be recorded", true));
                return findings;
            }
            int entries;
            try
            {
                entries = listener.Dump((in ConntrackEntry _) => { });
            }
            catch (ConntrackException e)
            {
                findings.Add(new Finding($"conntrack: NAT done by the kernel will not be recorded: {e.Message}", true));
                return findings;
            }
            var table = $"ctnetlink answers ({entries.ToString(CultureInfo.InvariantCulture)} entries in the table)";
            if (s.Events == 0)
                findings.Add(new Finding($"conntrack: net.netfilter.nf_conntrack_events = 0: the kernel sends no conntrack events, so NAT done by the kernel (kube-proxy, Docker, masquerade) is recorded only from the table at start and end; set it: sysctl -w net.netfilter.nf_conntrack_events=1 ({table})", true));
            else
                findings.Add(new Finding($"conntrack: events on (net.netfilter.nf_conntrack_events = {s.Events}), {table}: NAT done by the kernel is recorded", false));
            if (s.Acct == 0)
                findings.Add(new Finding("conntrack: net.netfilter.nf_conntrack_acct = 0: NAT rows carry no packet and byte counts; for them: sysctl -w net.netfilter.nf_conntrack_acct=1", true));
            if (s.Timestamp == 0)
                findings.Add(new Finding("conntrack: net.netfilter.nf_conntrack_timestamp = 0: a translation's first and last seen are when the recorder saw its events; for the kernel's own times: sysctl -w net.netfilter.nf_conntrack_timestamp=1", true));
        }
        return findings;
    }
}
