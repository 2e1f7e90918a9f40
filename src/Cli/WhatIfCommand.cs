using System.CommandLine;
using System.Net;
using System.Text;
using System.Text.Json;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Query;
using Forensics.Query.Output;
using Forensics.Query.Recording;
using Forensics.Query.WhatIf;

namespace Forensics.Cli;

/// <summary>
/// <c>forensics whatif REC --policy FILE... [--remove-policy NAME...] [--services-file FILE]</c>: the recording's
/// distinct flows replayed through the real datapath programs (BPF_PROG_TEST_RUN on a private
/// instance) programmed from the recording's snapshot with the policies changed as asked, and
/// the verdicts compared with the recorded ones. Docs: docs/whatif.md.
/// </summary>
public static class WhatIfCommand
{
    private const string RecordedSource = "recorded policies";

    public static Command Build()
    {
        var rec = new Argument<string[]>("recordings") { Description = "recording directories or bundles with the datapath's snapshot and events (several: the nodes of one cluster, replayed together)", Arity = ArgumentArity.OneOrMore };
        var policy = new Option<string[]>("--policy", "-p")
        {
            Description = "CiliumNetworkPolicy YAML file: a policy of the same namespace/name replaces the recorded one, others are added (repeatable)",
            AllowMultipleArgumentsPerToken = true,
        };
        var remove = new Option<string[]>("--remove-policy")
        {
            Description = "a recorded policy to take away, as namespace/name or name (namespace default) (repeatable)",
            AllowMultipleArgumentsPerToken = true,
        };
        var services = Vocabulary.InputFile("--services-file",
            "services and their backends from this file (kubectl get svc,endpointslices -A -o json) instead of the recording's: a flow to a service address is translated as the file says");
        var changedOnly = new Option<bool>("--changed-only") { Description = "only the flow groups whose verdict or drop reason changes" };
        policy.Validators.Add(r =>
        {
            foreach (var f in r.Tokens.Select(t => t.Value))
                if (Vocabulary.InputFileProblem(f) is { } problem)
                    r.AddError($"--policy: {f}: {problem}");
        });
        remove.Validators.Add(r =>
        {
            foreach (var n in r.Tokens.Select(t => t.Value))
                if (string.IsNullOrWhiteSpace(n))
                    r.AddError("--remove-policy: an empty policy name");
        });
        var format = Vocabulary.Format("table, csv, json (one object per line) or parquet (needs --output)", "table", "table", "csv", "json", "parquet");
        var output = Vocabulary.Output("write to this file instead of standard output");
        var cmd = new Command("whatif",
            "Replay a recording's flows against changed policies through the real datapath (BPF_PROG_TEST_RUN on a private instance programmed from the recording's snapshot, or for Hubble's flows from the pods they name and the --policy files alone): " +
            "one row per flow group with the recorded and the new verdict, drop reason, the rule that decides now and whether it changed. " +
            "Exit codes: 0 nothing that was delivered becomes dropped, 8 some delivered flow becomes dropped, 7 bad input (a policy that does not parse, " +
            "an unknown --remove-policy, a recording without snapshot or datapath events, a newer schema), 3 missing privilege (CAP_BPF), 2 usage");
        cmd.Arguments.Add(rec);
        foreach (var o in new Option[] { policy, remove, services, changedOnly, format, output })
            cmd.Options.Add(o);
        cmd.SetAction(p => Run(new WhatIfArgs(
            p.GetValue(rec)!, p.GetValue(policy) ?? [], p.GetValue(remove) ?? [], p.GetValue(services), p.GetValue(changedOnly),
            p.GetValue(format) ?? "table", p.GetValue(output))));
        return cmd;
    }

    private sealed record WhatIfArgs(string[] Recordings, string[] Policies, string[] Remove, string? ServicesFile, bool ChangedOnly, string Format, string? Output);

    private static int Run(WhatIfArgs a)
    {
        try
        {
            var fmt = a.Format.ToLowerInvariant() switch
            {
                "table" => OutputFormat.Table,
                "csv" => OutputFormat.Csv,
                "json" => OutputFormat.Json,
                "parquet" => OutputFormat.Parquet,
                var f => throw new UsageError($"unknown format \"{f}\" (table, csv, json, parquet)"),
            };
            if (fmt == OutputFormat.Parquet && a.Output is null)
                throw new UsageError("--format parquet needs --output FILE");
            using var session = QuerySession.Open(a.Recordings);
            var snapshot = RecordedFlows.Snapshot(session);
            if (a.ServicesFile is { } servicesFile)
            {
                var given = Services(servicesFile);
                Console.Error.WriteLine($"note: the services are the {given.Count} service ports of {servicesFile}, not the recording's {snapshot.Services.Count}");
                snapshot = snapshot with { Services = given };
            }
            var flows = RecordedFlows.Flows(session, snapshot.FromHubble);
            if (snapshot.FromHubble)
                Console.Error.WriteLine("note: the recording holds Hubble's flows, not the policies in force: the pods are those its flows name, " +
                    $"and the flows are replayed against the --policy files given ({a.Policies.Length}), none else; the recorded verdict is Hubble's");
            if (flows.Count == 0)
                throw new RecordingException($"{string.Join(", ", a.Recordings)}: the recording has none of the datapath's events (trace, drop, policy, capture at the endpoints): no flow to replay");
            var pods = Pods(snapshot);
            var policies = Policies(snapshot, pods, a.Policies, a.Remove);
            var replayed = Replay(snapshot, pods, policies, flows);
            var result = WhatIfReport.Build(snapshot, replayed, a.ChangedOnly);
            ResultWriter.Write(result, fmt, Console.Out, a.Output, session.ProtectedPaths);
            Console.Error.WriteLine(WhatIfReport.Summary(replayed, snapshot.Phase));
            return replayed.Any(WhatIfReport.BecomesDropped) ? (int)ExitCode.PolicyWouldDrop : (int)ExitCode.Ok;
        }
        catch (UsageError e)
        {
            return ForensicsCommand.Fail(ExitCode.Usage, e.Message);
        }
        catch (RecordingException e)
        {
            return ForensicsCommand.Fail(ExitCode.BadInput, e.Message);
        }
        catch (ClusterSpecException e)
        {
            return ForensicsCommand.Fail(ExitCode.BadInput, e.Message);
        }
        catch (Forensics.Datapath.Cluster.ClusterInputException e)
        {
            return ForensicsCommand.Fail(ExitCode.BadInput, e.Message);
        }
        catch (PrerequisiteException e)
        {
            return ForensicsCommand.Fail(ExitCode.Prerequisite, e.Message);
        }
        catch (Forensics.Datapath.Bpf.BpfException e)
        {
            return ForensicsCommand.Fail(ExitCode.Failure, e.Message);
        }
        catch (QueryException e)
        {
            return ForensicsCommand.Fail(ExitCode.Failure, e.Message);
        }
        catch (IOException e)
        {
            return ForensicsCommand.Fail(ExitCode.Failure, e.Message);
        }
    }

    private sealed class UsageError(string message) : Exception(message);

    /// <summary>
    /// A services file's service ports in the snapshot's form: each frontend (cluster IP, external IPs) with its ready
    /// backends. They replace the recording's services, so a flow to one of those addresses is translated as the file says.
    /// </summary>
    private static List<RecordedService> Services(string path) =>
        [.. Forensics.Datapath.Cluster.ServicesFile.Read(path).Services
            .Select(s => new RecordedService(s.Name, s.Namespace, s.Ip.ToString(), s.Port, s.Protocol.ToLowerInvariant(),
                [.. s.Endpoints.Select(e => (e.Ip.ToString(), e.Port)).Distinct()]))];

    /// <summary>The recording's endpoints as pods: their identity's k8s labels, without the namespace and cluster labels Cilium adds.</summary>
    private static List<PodSpec> Pods(RecordedSnapshot s)
    {
        var pods = new List<PodSpec>();
        foreach (var e in s.Endpoints.DistinctBy(e => (e.Namespace, e.Pod)))
        {
            if (!IPAddress.TryParse(e.Ip, out var ip))
                throw new RecordingException($"endpoint {e.Namespace}/{e.Pod}: '{e.Ip}' is not an address");
            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var l in e.Labels)
            {
                if (!l.StartsWith("k8s:", StringComparison.Ordinal) || l.IndexOf('=', StringComparison.Ordinal) is var eq && eq < 0)
                    continue;
                var key = l[4..eq];
                if (key is IdentityAllocator.NamespaceLabel or IdentityAllocator.ClusterLabel)
                    continue;
                labels[key] = l[(eq + 1)..];
            }
            pods.Add(new PodSpec(e.Pod, e.Namespace, labels, ip));
        }
        return pods;
    }

    /// <summary>The recorded pods as Pod documents, so that the loader checks a policy's selectors against them.</summary>
    private static string PodDocuments(IReadOnlyList<PodSpec> pods)
    {
        static string Q(string s) => JsonSerializer.Serialize(s);
        var sb = new StringBuilder();
        foreach (var p in pods)
        {
            sb.Append("\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: ").Append(Q(p.Name))
              .Append("\n  namespace: ").Append(Q(p.Namespace)).Append('\n');
            if (p.Labels.Count > 0)
            {
                sb.Append("  labels:\n");
                foreach (var (k, v) in p.Labels)
                    sb.Append("    ").Append(Q(k)).Append(": ").Append(Q(v)).Append('\n');
            }
            sb.Append("status:\n  podIP: ").Append(Q(p.Ip!.ToString())).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>CiliumNetworkPolicy documents of one text, read by the lab's loader (only policies are allowed).</summary>
    private static List<NetworkPolicySpec> ReadPolicies(string text, string source, IReadOnlyList<PodSpec> pods, string podDocs)
    {
        // malformed YAML is reported at its own line, before the recorded pods are appended to it
        try
        {
            ClusterLoader.Load(text, source);
        }
        catch (ClusterSpecException e) when (e.Message.Contains("malformed YAML", StringComparison.Ordinal))
        {
            throw;
        }
        catch (ClusterSpecException)
        {
            // selectors are checked against the recorded pods below
        }
        var spec = ClusterLoader.Load(text.TrimEnd() + "\n" + podDocs, source);
        if (spec.Pods.Count != pods.Count || spec.Services.Count > 0 || spec.Lab is not null)
            throw new ClusterSpecException($"{source}: only CiliumNetworkPolicy documents are read by whatif (the pods and services are the recording's)");
        return [.. spec.Policies];
    }

    private static List<NetworkPolicySpec> Policies(RecordedSnapshot s, IReadOnlyList<PodSpec> pods, string[] files, string[] remove)
    {
        var podDocs = PodDocuments(pods);
        var recordedText = string.Join("\n---\n", s.Policies.Select(p => p.SourceText.TrimEnd()));
        List<NetworkPolicySpec> policies;
        try
        {
            policies = s.Policies.Count == 0 ? [] : ReadPolicies(recordedText, RecordedSource, pods, podDocs);
        }
        catch (ClusterSpecException e)
        {
            throw new RecordingException($"the recording's policies do not load: {e.Message}");
        }
        static string Key(NetworkPolicySpec p) => $"{p.Namespace}/{p.Name}";
        foreach (var name in remove.SelectMany(r => r.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
        {
            var full = name.Contains('/', StringComparison.Ordinal) ? name : "default/" + name;
            if (policies.RemoveAll(p => Key(p) == full) == 0)
                throw new RecordingException($"--remove-policy {name}: the recording has no policy {full} (it has: {string.Join(", ", policies.Select(Key).DefaultIfEmpty("none"))})");
        }
        foreach (var file in files)
        {
            string text;
            try
            {
                text = File.ReadAllText(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ClusterSpecException($"{file}: cannot read: {e.Message}");
            }
            var given = ReadPolicies(text, file, pods, podDocs);
            if (given.Count == 0)
                throw new ClusterSpecException($"{file}: no CiliumNetworkPolicy in it");
            foreach (var p in given)
            {
                var i = policies.FindIndex(q => Key(q) == Key(p));
                if (i >= 0)
                    policies[i] = p;
                else
                    policies.Add(p);
            }
        }
        return policies;
    }

    private static List<ReplayedFlow> Replay(RecordedSnapshot s, List<PodSpec> pods, List<NetworkPolicySpec> policies, IReadOnlyList<RecordedFlow> flows)
    {
        var cluster = new ClusterSpec("whatif", null, pods, [], policies);
        var services = s.Services
            .Where(x => IPAddress.TryParse(x.FrontendIp, out _))
            .Select(x => new ReplayService(x.Name, x.Namespace, IPAddress.Parse(x.FrontendIp), x.Port, x.Protocol,
                [.. x.Backends.Where(b => IPAddress.TryParse(b.Ip, out _)).Select(b => (IPAddress.Parse(b.Ip), b.Port))]))
            .ToList();
        var reserved = s.ReservedPrefixes
            .Where(r => IPNetwork.TryParse(r.Prefix, out _))
            .Select(r => (IPNetwork.Parse(r.Prefix), r.Identity))
            .ToList();
        using var replay = PolicyReplay.Load(cluster, pods, services, reserved);
        var result = new List<ReplayedFlow>(flows.Count);
        foreach (var f in flows)
        {
            if (!IPAddress.TryParse(f.SrcIp, out var src) || !IPAddress.TryParse(f.DstIp, out var dst))
            {
                result.Add(new ReplayedFlow(f, null, "addresses not readable"));
                continue;
            }
            var translated = f.TranslatedIp is { } t && IPAddress.TryParse(t, out var tip) ? tip : dst;
            if (!replay.IsLocal(src) && !replay.IsLocal(dst) && !replay.IsLocal(translated))
            {
                result.Add(new ReplayedFlow(f, null, "neither end is an endpoint of the snapshot"));
                continue;
            }
            // captured headers when the recording has them: at the source's endpoint, else at the destination's
            var captured = replay.IsLocal(src) ? f.CaptureFrom : f.CaptureTo ?? f.CaptureFrom;
            var packet = captured is null ? null : ReplayPackets.FromCapture(captured, dst, f.DstPort);
            bool fromCapture = packet is not null;
            packet ??= ReplayPackets.FromTuple(src, f.SrcPort, dst, f.DstPort, f.ProtocolNumber);
            if (packet is null)
            {
                result.Add(new ReplayedFlow(f, null, $"protocol {f.Protocol} cannot be rebuilt"));
                continue;
            }
            var r = replay.Run(packet);
            result.Add(new ReplayedFlow(f, new NewVerdict(r.Delivered, r.DropReason, DecidedAt(r.Decided), Rule(r), fromCapture)));
        }
        return result;
    }

    private static string DecidedAt(ReplayStage? s) =>
        s is null ? "" : $"{(s.Direction == Dir.Egress ? "egress" : "ingress")} {s.Endpoint}";

    /// <summary>
    /// The rule that decides now: the rules behind the entry the verdict hit (by the rule id the datapath's verdict carried:
    /// POLICY PATH, '; '-separated), default deny, or none when no policy selects the flow's ends.
    /// </summary>
    private static string Rule(ReplayResult r)
    {
        if (r.Decided is not { } s)
            return "";
        if (s.Action is null)
            return s.Dropped ? "" : "no policy selects it";
        if (s.Match == PolicyMatch.None)
            return "default deny (no rule allows)";
        var match = Forensics.Format.Names.Match((byte)s.Match!.Value);
        return s.Rules.Count == 0 ? match
            : $"{string.Join("; ", s.Rules.Select(x => x.IsDefaultAllow ? x.ToString() : $"{x.Policy} {x.Path}"))} ({match})";
    }
}
