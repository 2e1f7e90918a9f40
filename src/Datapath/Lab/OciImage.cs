using System.Formats.Tar;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Forensics.Datapath.Lab;

/// <summary>
/// The lab's one container image, built here because nothing can be pulled: an OCI
/// image layout (oci-layout, index.json, blobs/sha256/...) as a tar that
/// <c>ctr images import</c> reads. Its single layer is busybox-static with a link per
/// applet, /lib and /lib64 as links into /usr (so a container with the host's /usr
/// mounted read-only runs the host's programs), and an /etc/passwd for root. It serves
/// as the pod sandbox ("pause") image and as every container's image.
/// </summary>
public static class OciImage
{
    public const string Busybox = "/bin/busybox";

    /// <summary>Writes the image layout tar to <paramref name="path"/>, named <paramref name="name"/> (a full reference, e.g. registry.k8s.io/pause:3.6).</summary>
    public static void Write(string path, string name, IReadOnlyList<string> entrypoint)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(entrypoint);
        if (!File.Exists(Busybox))
            throw new LabException($"{Busybox} is missing: install busybox-static (the containerd lab node builds its image from it)");
        var layer = Layer();
        var layerDigest = Digest(layer);
        var config = Json(new JsonObject
        {
            ["architecture"] = Arch(),
            ["os"] = "linux",
            ["config"] = new JsonObject
            {
                ["Entrypoint"] = new JsonArray([.. entrypoint.Select(e => (JsonNode)e)]),
                ["Env"] = new JsonArray("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
                ["WorkingDir"] = "/",
            },
            ["rootfs"] = new JsonObject { ["type"] = "layers", ["diff_ids"] = new JsonArray(layerDigest) },
        });
        var manifest = Json(new JsonObject
        {
            ["schemaVersion"] = 2,
            ["mediaType"] = "application/vnd.oci.image.manifest.v1+json",
            ["config"] = Descriptor("application/vnd.oci.image.config.v1+json", config),
            ["layers"] = new JsonArray(Descriptor("application/vnd.oci.image.layer.v1.tar", layer)),
        });
        var manifestDesc = Descriptor("application/vnd.oci.image.manifest.v1+json", manifest);
        manifestDesc["annotations"] = new JsonObject
        {
            ["io.containerd.image.name"] = name,
            ["org.opencontainers.image.ref.name"] = name[(name.LastIndexOf(':') + 1)..],
        };
        var index = Json(new JsonObject { ["schemaVersion"] = 2, ["manifests"] = new JsonArray(manifestDesc) });

        using var f = File.Create(path);
        using var tar = new TarWriter(f, TarEntryFormat.Pax, leaveOpen: false);
        AddFile(tar, "oci-layout", Encoding.UTF8.GetBytes("{\"imageLayoutVersion\":\"1.0.0\"}"));
        AddFile(tar, "index.json", index);
        foreach (var blob in new[] { layer, config, manifest })
            AddFile(tar, "blobs/sha256/" + Digest(blob)[7..], blob);
    }

    private static string Arch() => RuntimeInformation.OSArchitecture switch
    {
        System.Runtime.InteropServices.Architecture.Arm64 => "arm64",
        _ => "amd64",
    };

    private static byte[] Layer()
    {
        using var ms = new MemoryStream();
        using (var tar = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (var d in new[] { "bin", "etc", "usr", "tmp", "proc", "sys", "dev", "root", "var", "run" })
                tar.WriteEntry(new PaxTarEntry(TarEntryType.Directory, d + "/") { Mode = d == "tmp" ? (UnixFileMode)0x3ff | UnixFileMode.StickyBit : (UnixFileMode)0x1ed });
            tar.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, "lib") { LinkName = "usr/lib" });
            tar.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, "lib64") { LinkName = "usr/lib64" });
            tar.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, "sbin") { LinkName = "bin" });
            var bb = File.ReadAllBytes(Busybox);
            tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "bin/busybox") { Mode = (UnixFileMode)0x1ed, DataStream = new MemoryStream(bb) });
            foreach (var applet in Applets())
                tar.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, "bin/" + applet) { LinkName = "busybox" });
            AddFile(tar, "etc/passwd", Encoding.UTF8.GetBytes("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"));
            AddFile(tar, "etc/group", Encoding.UTF8.GetBytes("root:x:0:\nnogroup:x:65534:\n"));
        }
        return ms.ToArray();
    }

    private static List<string> Applets()
    {
        var r = Commands.Run(Busybox, ["--list"], TimeSpan.FromSeconds(10));
        var list = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(a => a != "busybox" && !a.Contains('/', StringComparison.Ordinal)).Distinct().ToList();
        if (list.Count == 0)
            throw new LabException($"{Busybox} --list printed no applets");
        return list;
    }

    private static void AddFile(TarWriter tar, string name, byte[] data) =>
        tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, name) { Mode = (UnixFileMode)0x1a4, DataStream = new MemoryStream(data) });

    private static byte[] Json(JsonNode node) => Encoding.UTF8.GetBytes(node.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));

    private static string Digest(byte[] data) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(data));

    private static JsonObject Descriptor(string mediaType, byte[] blob) =>
        new() { ["mediaType"] = mediaType, ["digest"] = Digest(blob), ["size"] = blob.Length };
}
