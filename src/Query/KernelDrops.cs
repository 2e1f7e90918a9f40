namespace Forensics.Query;

/// <summary>
/// Kernel drops (skb:kfree_skb) that are not a dropped network packet in the user's sense, left
/// out of <c>drops</c> unless <c>--all-reasons</c> is given (docs/drops.md lists the same, a test
/// keeps the two equal). A reason is the kernel's enum skb_drop_reason name without its
/// SKB_DROP_REASON_ prefix, as the kdrop table stores it.
/// </summary>
public static class KernelDrops
{
    /// <summary>Reasons left out by default, and why.</summary>
    public static IReadOnlyList<(string Reason, string Why)> HiddenReasons { get; } =
    [
        ("SOCKET_CLOSE", "the socket was closed with data still queued: the network delivered it, the application did not read it"),
        ("QUEUE_PURGE", "a socket's queue was purged (close, reset): packets already delivered or never sent"),
        ("UNIX_DISCONNECT", "a unix socket message, not a network packet"),
        ("UNIX_SKIP_OOB", "a unix socket message, not a network packet"),
        ("TCP_OFOMERGE", "an out-of-order TCP segment merged into another one: its data was kept"),
        ("TCP_OLD_DATA", "a retransmitted TCP segment whose data had already arrived"),
        ("IPV6_NDISC_NS_OTHERHOST", "an IPv6 neighbour solicitation for another host"),
    ];

    /// <summary>Rules on the packet rather than the reason, left out by default too.</summary>
    public static IReadOnlyList<(string Rule, string Why)> HiddenPackets { get; } =
    [
        ("not IP", "not an IPv4 or IPv6 packet (ARP, LLDP, ...): no flow to name"),
        ("multicast or broadcast destination", "to a multicast or broadcast address (224.0.0.0/4, 255.255.255.255, ff00::/8: neighbour discovery, MLD, mDNS): link-local noise"),
    ];
}
