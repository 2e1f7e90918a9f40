using Forensics.Datapath.Lab;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// The runtime's netns paths (a CRI sandbox's /var/run/netns/cni-..., a lab's /run/netns/NAME) are nsfs
/// bind mounts: their inode must come out as stat(2) gives it, without native code.
/// </summary>
public sealed class NetnsInodeTests
{
    [KernelFact]
    public void Inode_NsfsBindMountAndProcLink_AsStatSaysAndNullForOtherFiles()
    {
        var name = $"fx-ino-{Environment.ProcessId}";
        Assert.Equal(0, Commands.Run("ip", ["netns", "add", name]).ExitCode);
        try
        {
            var expected = NetNamespace.Inode(name); // stat(2) of the bind mount
            Assert.NotNull(expected);
            Assert.Equal((uint?)expected, Forensics.Runtime.Netns.Inode($"/run/netns/{name}"));
            Assert.Equal((uint?)NetNamespace.InodeOfProcess(Environment.ProcessId), Forensics.Runtime.Netns.Inode("/proc/self/ns/net"));
            Assert.NotEqual(Forensics.Runtime.Netns.Inode("/proc/self/ns/net"), Forensics.Runtime.Netns.Inode($"/run/netns/{name}"));
            Assert.Null(Forensics.Runtime.Netns.Inode("/etc/hostname"));          // a file on another file system
            Assert.Null(Forensics.Runtime.Netns.Inode("/proc/self/ns/uts"));      // a namespace, but not a network one
            Assert.Null(Forensics.Runtime.Netns.Inode($"/run/netns/{name}-absent"));
        }
        finally
        {
            Commands.Run("ip", ["netns", "del", name]);
        }
    }
}
