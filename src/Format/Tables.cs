namespace Forensics.Format;

/// <summary>The tables a recording has: one folder each (schemas/README.md).</summary>
public static class Tables
{
    /// <summary>Event tables, in the order of the ABI's event kinds (drop = kind 1, ...).</summary>
    public static IReadOnlyList<string> Events { get; } = ["drop", "policy", "nat", "trace", "capture", "exec", "exit", "connect", "kdrop"];

    /// <summary>Per-second loss counters.</summary>
    public const string Loss = "loss";

    /// <summary>The datapath's tables at the start and the end of a recording.</summary>
    public static IReadOnlyList<string> Snapshots { get; } =
        ["endpoints", "identities", "ipcache", "policies", "policy_entries", "services", "conntrack", "nat_entries"];
}
