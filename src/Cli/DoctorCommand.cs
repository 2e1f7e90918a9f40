using System.CommandLine;
using Forensics.Datapath;
using Forensics.Datapath.Bpf;

namespace Forensics.Cli;

/// <summary><c>forensics doctor</c>: checks that this machine can record, and says what is missing.</summary>
public static class DoctorCommand
{
    public static Command Build()
    {
        var cmd = new Command("doctor", "Check that this machine can record: privileges, libbpf, kernel BTF, tracefs and bpffs (mounted if missing), that every embedded BPF object loads, and whether the kernel's conntrack events (NAT) can be recorded (net.netfilter.nf_conntrack_events, ctnetlink)");
        cmd.SetAction(_ => Run());
        return cmd;
    }

    private static int Run()
    {
        Prerequisites.EnsureKernelAccess();
        Console.WriteLine($"kernel {Environment.OSVersion.Version}, BTF present, tracefs and bpffs mounted, privileges ok");
        foreach (var name in EmbeddedObjects.Names().Order(StringComparer.Ordinal))
        {
            using var obj = BpfObject.OpenEmbedded(name);
            try
            {
                obj.Load();
            }
            catch (BpfException e)
            {
                throw new PrerequisiteException($"bpf/{name}.bpf.o does not load: {e.Message}", e);
            }
            Console.WriteLine($"bpf/{name}.bpf.o: loaded {string.Join(", ", obj.ProgramNames())}");
        }
        foreach (var f in Forensics.Datapath.Conntrack.ConntrackCheck.Run())
            Console.WriteLine(f.Warning ? "warning: " + f.Text : f.Text);
        return (int)ExitCode.Ok;
    }
}
