using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Forensics.Datapath.Control;
using Forensics.Datapath.Interop;
using Forensics.Runtime;
using Forensics.Runtime.Cri;
using Google.Protobuf;

namespace Forensics.Datapath.Lab;

/// <summary>
/// The lab's node made of real containerd pods: a containerd started for the lab
/// (its own root, state, CNI config and socket under the lab's state directory),
/// running in the lab's node network namespace (nsenter --net: the machine's mount
/// namespace, as a node's containerd), pods as CRI pod sandboxes networked by the
/// CNI bridge and host-local plugins, one container per spec.containers[] entry
/// (a pod without any gets one named after it), and Services as kube-proxy's
/// iptables rules in the node. Containers run the lab's image (busybox-static,
/// <see cref="OciImage"/>) with the host's /usr and this program's folder mounted
/// read-only, so the first container of a pod with containerPorts runs
/// <c>forensics lab serve</c> and steps run <c>forensics lab connect</c> in it
/// through CRI ExecSync, as <c>kubectl exec</c> would.
/// </summary>
internal static class ContainerdNode
{
    /// <summary>The CRI config's sandbox_image: the name the lab's image is imported under for sandboxes.</summary>
    public const string SandboxImage = "registry.k8s.io/pause:3.6";

    /// <summary>The image of containers whose spec gives none.</summary>
    public const string DefaultImage = "docker.io/library/busybox:stable";

    public const string CniBridge = "cni0";

    public static string Dir(string lab) => Path.Combine(LabNames.LogDir(lab), "containerd");

    public static string Socket(string lab) => Path.Combine(Dir(lab), "containerd.sock");

    /// <summary>The cgroup parent of a pod's containers (cgroupfs layout, as kubelet's /kubepods/.../pod&lt;uid&gt; but under the lab's own root).</summary>
    public static string CgroupRoot(string lab) => $"/forensics-{lab}";

    /// <summary>A pod's uid: stable for a lab and pod, shaped as Kubernetes' (a UUID).</summary>
    public static string PodUid(string lab, PodSpec pod)
    {
        var h = SHA256.HashData(Encoding.UTF8.GetBytes($"{lab}/{pod.FullName}"));
        h[6] = (byte)((h[6] & 0x0f) | 0x40);
        h[8] = (byte)((h[8] & 0x3f) | 0x80);
        return new Guid(h.AsSpan(0, 16), bigEndian: true).ToString();
    }

    /// <summary>The gateway of the pod CIDR on the node's bridge: its last usable address (pods are numbered from the first).</summary>
    public static IPAddress Gateway(IPNetwork podCidr)
    {
        var b = podCidr.BaseAddress.GetAddressBytes();
        uint v = (uint)b[0] << 24 | (uint)b[1] << 16 | (uint)b[2] << 8 | b[3];
        v |= (1u << (32 - podCidr.PrefixLength)) - 1;
        v -= 1;
        return new IPAddress([(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
    }

    private static IPAddress Offset(IPAddress ip, int delta)
    {
        var b = ip.GetAddressBytes();
        uint v = ((uint)b[0] << 24 | (uint)b[1] << 16 | (uint)b[2] << 8 | b[3]) + (uint)delta;
        return new IPAddress([(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
    }

    /// <summary>Starts containerd in the node namespace and waits until its CRI answers; records it in the state first.</summary>
    public static CriClient Start(LabState state, LabSpec spec, Action<string> say)
    {
        foreach (var tool in new[] { "/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/sbin/iptables-restore", "/usr/bin/nsenter" })
            if (!File.Exists(tool))
                throw new LabException($"{tool} is missing: the containerd lab node needs containerd, runc, containernetworking-plugins, iptables and util-linux (scripts/prereqs.sh installs them)");
        var dir = Dir(state.Name);
        var gateway = Gateway(spec.PodCidr);
        foreach (var d in new[] { "root", "state", "opt", "net.d", "ipam", "pods" })
            Directory.CreateDirectory(Path.Combine(dir, d));
        File.WriteAllText(Path.Combine(dir, "config.toml"), Config(dir));
        var first = Offset(spec.PodCidr.BaseAddress, 1);
        File.WriteAllText(Path.Combine(dir, "net.d", "10-forensics.conflist"), new JsonObject
        {
            ["cniVersion"] = "0.4.0",
            ["name"] = "forensics-" + state.Name,
            ["plugins"] = new JsonArray(new JsonObject
            {
                ["type"] = "bridge",
                ["bridge"] = CniBridge,
                ["isGateway"] = true,
                ["ipMasq"] = true,
                ["hairpinMode"] = true,
                ["ipam"] = new JsonObject
                {
                    ["type"] = "host-local",
                    ["ranges"] = new JsonArray(new JsonArray(new JsonObject
                    {
                        ["subnet"] = spec.PodCidr.ToString(),
                        ["rangeStart"] = first.ToString(),
                        ["rangeEnd"] = Offset(gateway, -1).ToString(),
                        ["gateway"] = gateway.ToString(),
                    })),
                    ["routes"] = new JsonArray(new JsonObject { ["dst"] = "0.0.0.0/0" }),
                    ["dataDir"] = Path.Combine(dir, "ipam"),
                },
            }),
        }.ToJsonString());
        // kube-proxy needs bridged traffic to pass iptables (br_netfilter), and the node forwards.
        Commands.Sysctl(state.NodeNetns, ("net.bridge.bridge-nf-call-iptables", "1"), ("net.ipv4.ip_forward", "1"));

        say($"containerd: root, state and socket under {dir}, in {state.NodeNetns}");
        var log = Path.Combine(dir, "containerd.log");
        var argv = new[] { "nsenter", $"--net=/run/netns/{state.NodeNetns}", "containerd", "--config", Path.Combine(dir, "config.toml") };
        var script = "exec " + string.Join(' ', argv.Select(Commands.ShellQuote)) + $" >{Commands.ShellQuote(log)} 2>&1 </dev/null";
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using (var p = Process.Start(psi) ?? throw new LabException("cannot start containerd"))
        {
            state.Processes.Add(new LabProcess { Pid = p.Id, StartTime = LabState.ProcessStartTime(p.Id) ?? 0, Netns = state.NodeNetns, What = "containerd" });
            state.Node = LabNodeKinds.Containerd;
            state.ContainerdDir = dir;
            state.Save();
        }
        var cri = CriClient.Create("unix://" + Socket(state.Name), TimeSpan.FromSeconds(10));
        var sw = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                if (File.Exists(Socket(state.Name)) || Path.Exists(Socket(state.Name)))
                {
                    cri.Version();
                    break;
                }
            }
            catch (RuntimeException) when (sw.Elapsed < TimeSpan.FromSeconds(30))
            {
                // not serving yet
            }
            catch (RuntimeException e)
            {
                throw new LabException($"containerd did not serve CRI within 30s: {e.Message}; {LastLines(log)}");
            }
            if (sw.Elapsed > TimeSpan.FromSeconds(30))
                throw new LabException($"containerd did not create its socket within 30s: {LastLines(log)}");
            Thread.Sleep(100);
        }
        return cri;
    }

    private static string LastLines(string log)
    {
        try
        {
            var lines = File.ReadAllLines(log).Where(l => l.Contains("level=error", StringComparison.Ordinal) || l.Contains("level=fatal", StringComparison.Ordinal)).TakeLast(2);
            return string.Join(" | ", lines);
        }
        catch (IOException)
        {
            return "no log";
        }
    }

    private static string Config(string dir) => $$"""
        version = 2
        root = "{{dir}}/root"
        state = "{{dir}}/state"
        disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

        [grpc]
          address = "{{dir}}/containerd.sock"

        [ttrpc]
          address = "{{dir}}/containerd.sock.ttrpc"

        [debug]
          address = ""

        [plugins."io.containerd.internal.v1.opt"]
          path = "{{dir}}/opt"

        [plugins."io.containerd.grpc.v1.cri"]
          sandbox_image = "{{SandboxImage}}"
          # root lacks CAP_SYS_RESOURCE on these machines: a negative oom_score_adj is refused
          restrict_oom_score_adj = true
          netns_mounts_under_state_dir = true
          stream_server_address = "127.0.0.1"
          stream_server_port = "0"
          enable_selinux = false
          disable_apparmor = true
          [plugins."io.containerd.grpc.v1.cri".cni]
            bin_dir = "/usr/lib/cni"
            conf_dir = "{{dir}}/net.d"
            max_conf_num = 1
          [plugins."io.containerd.grpc.v1.cri".containerd]
            snapshotter = "overlayfs"
            default_runtime_name = "runc"
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
              runtime_type = "io.containerd.runc.v2"
              [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
                BinaryName = "/usr/sbin/runc"
                SystemdCgroup = false
        """;

    /// <summary>Builds the lab image and imports it under the sandbox image's name and every image the pods name.</summary>
    public static void ImportImages(LabState state, ClusterSpec cluster, Action<string> say)
    {
        var dir = Dir(state.Name);
        var tar = Path.Combine(dir, "lab-image.tar");
        OciImage.Write(tar, SandboxImage, ["/bin/sleep", "2147483647"]);
        var names = cluster.Pods.SelectMany(p => p.Containers.Count == 0 ? [DefaultImage] : p.Containers.Select(c => Normalize(c.Image ?? DefaultImage)))
            .Distinct(StringComparer.Ordinal).Where(n => n != SandboxImage).ToList();
        say($"image: busybox-static as {SandboxImage}{(names.Count > 0 ? " and " + string.Join(", ", names) : "")}");
        Ctr(state, ["images", "import", "--no-unpack=false", tar], TimeSpan.FromSeconds(60));
        foreach (var n in names)
            Ctr(state, ["images", "tag", "--force", SandboxImage, n], TimeSpan.FromSeconds(20));
    }

    private static void Ctr(LabState state, string[] args, TimeSpan timeout)
    {
        var r = Commands.Run("ctr", ["--address", Socket(state.Name), "-n", "k8s.io", .. args], timeout);
        if (r.ExitCode != 0)
            throw new LabException($"ctr {string.Join(' ', args)}: {(r.TimedOut ? "timed out" : r.FirstErrorLine)}");
    }

    /// <summary>An image reference as containerd's CRI resolves it (docker.io/library/ for bare names, :latest without a tag).</summary>
    public static string Normalize(string image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var name = image;
        var slash = name.IndexOf('/', StringComparison.Ordinal);
        var first = slash < 0 ? "" : name[..slash];
        if (slash < 0)
            name = "docker.io/library/" + name;
        else if (!first.Contains('.', StringComparison.Ordinal) && !first.Contains(':', StringComparison.Ordinal) && first != "localhost")
            name = "docker.io/" + name;
        var lastSlash = name.LastIndexOf('/');
        if (!name[lastSlash..].Contains(':', StringComparison.Ordinal) && !name.Contains('@', StringComparison.Ordinal))
            name += ":latest";
        return name;
    }

    private static PodSandboxConfig SandboxConfig(string lab, PodSpec pod)
    {
        var uid = PodUid(lab, pod);
        var cfg = new PodSandboxConfig
        {
            Metadata = new PodSandboxMetadata { Name = pod.Name, Namespace = pod.Namespace, Uid = uid, Attempt = 0 },
            Hostname = pod.Name,
            LogDirectory = Path.Combine(Dir(lab), "pods", $"{pod.Namespace}_{pod.Name}_{uid}"),
            Linux = new LinuxPodSandboxConfig
            {
                CgroupParent = $"{CgroupRoot(lab)}/pod{uid}",
                SecurityContext = new LinuxSandboxSecurityContext { NamespaceOptions = new NamespaceOption { Network = NamespaceMode.Pod, Pid = NamespaceMode.Container, Ipc = NamespaceMode.Pod } },
            },
        };
        foreach (var (k, v) in pod.Labels)
            cfg.Labels[k] = v;
        // As kubelet labels sandboxes.
        cfg.Labels["io.kubernetes.pod.name"] = pod.Name;
        cfg.Labels["io.kubernetes.pod.namespace"] = pod.Namespace;
        cfg.Labels["io.kubernetes.pod.uid"] = uid;
        return cfg;
    }

    /// <summary>
    /// Runs every pod as a CRI sandbox with its containers, in document order. host-local
    /// hands out addresses in order; its last-reserved record is set before each sandbox so
    /// the pod gets the address the lab assigned, which is then checked.
    /// </summary>
    public static void RunPods(LabState state, ClusterSpec cluster, CriClient cri, IReadOnlyList<string> self, Action<string> say)
    {
        var lab = state.Name;
        var ipamDir = Path.Combine(Dir(lab), "ipam", "forensics-" + lab);
        foreach (var pod in cluster.Pods)
        {
            var ip = pod.Ip ?? throw new LabException($"Pod {pod.FullName} has no address");
            var cfg = SandboxConfig(lab, pod);
            Directory.CreateDirectory(cfg.LogDirectory);
            Directory.CreateDirectory(ipamDir);
            File.WriteAllText(Path.Combine(ipamDir, "last_reserved_ip.0"), Offset(ip, -1).ToString());
            var ep = new LabEndpoint { Pod = pod.FullName, Ip = ip.ToString(), PodUid = cfg.Metadata.Uid };
            state.Endpoints.Add(ep);
            state.Save();
            var sandbox = cri.RunPodSandbox(cfg, TimeSpan.FromSeconds(60));
            ep.SandboxId = sandbox;
            state.Save();
            var status = cri.Sandbox(sandbox);
            if (status.Ips.Count == 0 || status.Ips[0] != ip.ToString())
                throw new LabException($"Pod {pod.FullName}: containerd's CNI gave it {string.Join(",", status.Ips)}, the lab assigned {ip}");
            ep.Netns = status.NetnsPath ?? "";
            say($"pod {pod.FullName}: sandbox {sandbox[..12]}, {ip}, uid {cfg.Metadata.Uid}");

            var containers = pod.Containers.Count == 0 ? [new ContainerSpec(pod.Name, null)] : pod.Containers;
            for (int i = 0; i < containers.Count; i++)
            {
                var c = containers[i];
                List<string> command;
                if (i == 0 && pod.ContainerPorts.Count > 0)
                {
                    command = [.. self, "lab", "serve", "--name", pod.Name];
                    foreach (var p in pod.ContainerPorts)
                        command.AddRange([p.Protocol == "UDP" ? "--udp" : "--tcp", $"{ip}:{p.Port}"]);
                }
                else
                {
                    command = ["/bin/sleep", "2147483647"];
                }
                var cc = ContainerConfig(pod, cfg, c, command, self);
                Directory.CreateDirectory(Path.Combine(cfg.LogDirectory, c.Name));
                var id = cri.CreateContainer(sandbox, cc, cfg);
                ep.Containers.Add(new LabContainer { Name = c.Name, Id = id, Image = cc.Image.Image, Serves = command[0] != "/bin/sleep" });
                state.Save();
                cri.StartContainer(id);
                say($"  container {c.Name}: {id[..12]} ({cc.Image.Image}): {string.Join(' ', command.Skip(self.Count).Take(2).DefaultIfEmpty(command[0]))}");
            }
        }
    }

    private static ContainerConfig ContainerConfig(PodSpec pod, PodSandboxConfig sandbox, ContainerSpec c, List<string> command, IReadOnlyList<string> self)
    {
        var cc = new ContainerConfig
        {
            Metadata = new ContainerMetadata { Name = c.Name, Attempt = 0 },
            Image = new ImageSpec { Image = Normalize(c.Image ?? DefaultImage) },
            LogPath = Path.Combine(c.Name, "0.log"),
            WorkingDir = "/",
            Linux = new LinuxContainerConfig { SecurityContext = new LinuxContainerSecurityContext() },
        };
        cc.Command.AddRange(command);
        var dotnetRoot = Environment.GetEnvironmentVariable("DOTNET_ROOT") is { Length: > 0 } r ? r
            : Path.GetDirectoryName(File.ResolveLinkTarget("/usr/bin/dotnet", returnFinalTarget: true)?.FullName ?? "/usr/share/dotnet") ?? "/usr/share/dotnet";
        foreach (var (k, v) in new[] { ("HOME", "/tmp"), ("DOTNET_ROOT", dotnetRoot), ("DOTNET_EnableDiagnostics", "0"), ("DOTNET_CLI_TELEMETRY_OPTOUT", "1") })
            cc.Envs.Add(new KeyValue { Key = k, Value = ByteString.CopyFromUtf8(v) });
        foreach (var host in HostMounts(self, dotnetRoot))
            cc.Mounts.Add(new Mount { ContainerPath = host, HostPath = host, Readonly = true });
        cc.Labels["io.kubernetes.container.name"] = c.Name;
        cc.Labels["io.kubernetes.pod.name"] = pod.Name;
        cc.Labels["io.kubernetes.pod.namespace"] = pod.Namespace;
        cc.Labels["io.kubernetes.pod.uid"] = sandbox.Metadata.Uid;
        return cc;
    }

    /// <summary>The host folders a container needs to run this program: /usr, and the program's and the .NET runtime's folders when they are elsewhere.</summary>
    internal static IReadOnlyList<string> HostMounts(IReadOnlyList<string> self, string dotnetRoot)
    {
        var dirs = new List<string> { "/usr" };
        foreach (var p in self.Where(p => p.StartsWith('/')).Append(dotnetRoot + "/"))
        {
            var d = Path.GetDirectoryName(p.TrimEnd('/') + (p.EndsWith('/') ? "/x" : "")) ?? "/";
            if (!dirs.Any(x => d == x || d.StartsWith(x + "/", StringComparison.Ordinal)))
                dirs.Add(d);
        }
        return dirs;
    }

    /// <summary>Waits until every serving container wrote "ready" to its log (CRI log format: TIME STREAM TAG TEXT).</summary>
    public static void WaitReady(LabState state, CriClient cri, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        foreach (var ep in state.Endpoints)
        {
            foreach (var c in ep.Containers.Where(c => c.Serves))
            {
                var pod = ep.Pod.Split('/');
                var log = Path.Combine(Dir(state.Name), "pods", $"{pod[0]}_{pod[1]}_{ep.PodUid}", c.Name, "0.log");
                while (true)
                {
                    var text = File.Exists(log) ? File.ReadAllText(log) : "";
                    if (text.Split('\n').Any(l => l.Split(' ', 4) is { Length: 4 } f && f[3].StartsWith("ready", StringComparison.Ordinal)))
                        break;
                    if (sw.Elapsed > timeout)
                    {
                        var st = cri.ListContainers().FirstOrDefault(x => x.Id == c.Id)?.State ?? "gone";
                        var why = text.Split('\n').Select(l => l.Split(' ', 4)).Where(f => f.Length == 4).Select(f => f[3].Trim()).FirstOrDefault(l => l.Length > 0) ?? "no output";
                        throw new LabException($"container {c.Name} of {ep.Pod} ({st}) did not listen within {timeout.TotalSeconds:0}s: {why}");
                    }
                    Thread.Sleep(50);
                }
            }
        }
    }

    /// <summary>Applies the Services as kube-proxy's iptables rules, then the optional node firewall, in the node namespace.</summary>
    public static string ApplyRules(LabState state, ClusterSpec cluster, Action<string> say)
    {
        var ports = KubeProxyRules.ServicePorts(cluster, p => p.Ip);
        var text = KubeProxyRules.Render(ports, cluster.Lab!.PodCidr);
        File.WriteAllText(Path.Combine(Dir(state.Name), "kube-proxy.rules"), text);
        IptablesRestore(state, text, "kube-proxy rules");
        say($"services: kube-proxy iptables rules for {ports.Count} service ports ({ports.Count(p => p.Endpoints.Count == 0)} without endpoints: REJECT)");
        if (cluster.Lab.NodeFirewall is { } fw)
        {
            var body = fw.EndsWith('\n') ? fw : fw + "\n";
            File.WriteAllText(Path.Combine(Dir(state.Name), "node-firewall.rules"), body);
            IptablesRestore(state, body, "spec.nodeFirewall");
            say("node firewall: spec.nodeFirewall applied");
        }
        return text;
    }

    private static void IptablesRestore(LabState state, string text, string what)
    {
        var r = Commands.Run("ip", ["netns", "exec", state.NodeNetns, "iptables-restore", "--noflush"], TimeSpan.FromSeconds(30), stdin: text);
        if (r.ExitCode != 0)
            throw new LabException($"{what}: iptables-restore: {(r.TimedOut ? "timed out" : r.FirstErrorLine)}");
    }

    /// <summary>
    /// What down removes besides the namespaces: the inodes of the pods' network namespaces
    /// (so their processes are ended), then, once the processes are gone, every mount under the
    /// containerd folder (rootfs overlays, shm, netns), and the pods' cgroups.
    /// </summary>
    public static IReadOnlyList<ulong> PodNetnsInodes(string lab)
    {
        var dir = Path.Combine(Dir(lab), "state", "io.containerd.grpc.v1.cri", "netns");
        if (!Directory.Exists(dir))
            return [];
        return Directory.EnumerateFiles(dir).Select(Netns.Inode).OfType<uint>().Select(i => (ulong)i).ToList();
    }

    /// <summary>Processes in the lab's pod cgroups (every hierarchy), whatever their namespace.</summary>
    public static IReadOnlyList<int> CgroupProcesses(string lab)
    {
        var pids = new HashSet<int>();
        foreach (var root in CgroupRoots())
        {
            var top = Path.Combine(root, CgroupRoot(lab).TrimStart('/'));
            if (!Directory.Exists(top))
                continue;
            foreach (var procs in Directory.EnumerateFiles(top, "cgroup.procs", SearchOption.AllDirectories))
            {
                try
                {
                    foreach (var l in File.ReadAllLines(procs))
                        if (int.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid != Environment.ProcessId)
                            pids.Add(pid);
                }
                catch (IOException)
                {
                    // removed meanwhile
                }
            }
        }
        return [.. pids];
    }

    public static void RemoveLeftovers(string lab, List<string> removed)
    {
        var dir = Dir(lab);
        var mounts = MountsUnder(dir);
        foreach (var m in mounts.OrderByDescending(m => m.Length))
        {
            if (LibC.umount2(m, LibC.MNT_DETACH) != 0)
                throw new LabException($"umount {m}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
        if (mounts.Count > 0)
            removed.Add($"{mounts.Count} containerd mounts");
        int cgroups = 0;
        foreach (var root in CgroupRoots())
        {
            var top = Path.Combine(root, CgroupRoot(lab).TrimStart('/'));
            if (!Directory.Exists(top))
                continue;
            foreach (var d in Directory.EnumerateDirectories(top, "*", SearchOption.AllDirectories).OrderByDescending(d => d.Length).Append(top))
            {
                for (int i = 0; ; i++)
                {
                    try
                    {
                        Directory.Delete(d);
                        cgroups++;
                        break;
                    }
                    catch (IOException) when (i < 50)
                    {
                        Thread.Sleep(40); // the last task is still exiting
                    }
                    catch (IOException e)
                    {
                        throw new LabException($"cgroup {d}: {e.Message}");
                    }
                }
            }
        }
        if (cgroups > 0)
            removed.Add($"{cgroups} cgroups under {CgroupRoot(lab)}");
    }

    private static List<string> MountsUnder(string dir)
    {
        var prefix = dir.TrimEnd('/') + "/";
        var list = new List<string>();
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var f = line.Split(' ');
            if (f.Length > 4)
            {
                var mp = f[4].Replace("\\040", " ", StringComparison.Ordinal);
                if (mp.StartsWith(prefix, StringComparison.Ordinal))
                    list.Add(mp);
            }
        }
        return list.Distinct().ToList();
    }

    /// <summary>Every cgroup hierarchy's mount point (v1 controllers and the unified one).</summary>
    private static IEnumerable<string> CgroupRoots()
    {
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            int dash = line.IndexOf(" - ", StringComparison.Ordinal);
            if (dash < 0)
                continue;
            var fs = line[(dash + 3)..].Split(' ')[0];
            if (fs is "cgroup" or "cgroup2")
                yield return line[..dash].Split(' ')[4];
        }
    }

    /// <summary>Runs a step's command in the pod's first container (CRI ExecSync, as kubectl exec).</summary>
    public static CommandResult Exec(string lab, LabEndpoint ep, IReadOnlyList<string> cmd, TimeSpan timeout)
    {
        var c = (ep.Containers.Count > 0 ? ep.Containers[0] : null) ?? throw new LabException($"pod {ep.Pod} has no container");
        using var cri = CriClient.Create("unix://" + Socket(lab), TimeSpan.FromSeconds(10));
        var sw = Stopwatch.StartNew();
        try
        {
            var (code, stdout, stderr) = cri.ExecSync(c.Id, cmd, timeout);
            return new CommandResult(code, stdout, stderr, false, sw.Elapsed);
        }
        catch (RuntimeException e) when (sw.Elapsed >= timeout)
        {
            return new CommandResult(-1, "", e.Message, true, sw.Elapsed);
        }
        catch (RuntimeException e)
        {
            throw new LabException($"exec in {ep.Pod}/{c.Name}: {e.Message}", e);
        }
    }

    internal static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
