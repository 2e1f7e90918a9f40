using Forensics.Recorder.Batches;
using Forensics.Runtime;

namespace Forensics.Recorder.Tables;

/// <summary>The pods and containers tables (schemas/pods.v1.json, containers.v1.json): one row per pod or container per change.</summary>
public static class WorkloadTables
{
    public static List<TableBatch> From(IReadOnlyList<WorkloadChange> changes, string source, WorkloadCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(changes);
        ArgumentNullException.ThrowIfNull(catalog);
        var result = new List<TableBatch>();
        var pods = changes.Where(c => c.Pod is not null).ToList();
        if (pods.Count > 0)
        {
            var b = new TableBatch("pods", pods.Count);
            var (phase, taken, uid, ns, name, sandbox, ips, netns, labels, ready, created, src) = (b.Str("phase"), b.Timestamp("taken"), b.Str("uid"),
                b.Str("namespace"), b.Str("pod"), b.Str("sandbox_id", nullable: true), b.Str("ips"), b.U32("netns_ino"), b.Str("labels"),
                b.Bool("ready"), b.Timestamp("created"), b.Str("source"));
            foreach (var c in pods)
            {
                var p = c.Pod!;
                int i = b.NextRow();
                phase.Values[i] = c.Phase;
                taken.Values[i] = Ns(c.TakenUtc);
                uid.Values[i] = p.Uid;
                ns.Values[i] = p.Namespace;
                name.Values[i] = p.Name;
                sandbox.Values[i] = p.SandboxId;
                ips.Values[i] = string.Join(',', p.Ips);
                netns.Values[i] = p.NetnsInode;
                labels.Values[i] = string.Join(',', p.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}"));
                ready.Values[i] = p.Ready;
                created.Values[i] = Ns(p.CreatedUtc);
                src.Values[i] = source;
            }
            result.Add(b);
        }
        var containers = changes.Where(c => c.Container is not null).ToList();
        if (containers.Count > 0)
        {
            var b = new TableBatch("containers", containers.Count);
            var (phase, taken, id, name, image, uid, ns, pod, sandbox, state, created) = (b.Str("phase"), b.Timestamp("taken"), b.Str("container_id"),
                b.Str("container"), b.Str("image"), b.Str("pod_uid"), b.Str("namespace", nullable: true), b.Str("pod", nullable: true),
                b.Str("sandbox_id", nullable: true), b.Str("state"), b.Timestamp("created"));
            foreach (var c in containers)
            {
                var k = c.Container!;
                var owner = catalog.PodOf(k.PodUid);
                int i = b.NextRow();
                phase.Values[i] = c.Phase;
                taken.Values[i] = Ns(c.TakenUtc);
                id.Values[i] = k.Id;
                name.Values[i] = k.Name;
                image.Values[i] = k.Image;
                uid.Values[i] = k.PodUid;
                ns.Values[i] = owner?.Namespace;
                pod.Values[i] = owner?.Name;
                sandbox.Values[i] = k.SandboxId;
                state.Values[i] = k.State;
                created.Values[i] = Ns(k.CreatedUtc);
            }
            result.Add(b);
        }
        return result;
    }

    private static long Ns(DateTime utc) => (utc.Ticks - DateTime.UnixEpoch.Ticks) * 100;
}
