namespace Forensics.Datapath.Control;

/// <summary>
/// Cilium's drop reasons (code, `cilium monitor` text, Hubble enum name), from
/// /work/shared/reference/drop_reasons.csv (Cilium v1.19.4). Keyed on the number.
/// </summary>
public static class CiliumDropReasons
{
    public static IReadOnlyDictionary<int, (string Text, string Hubble)> All { get; } = new Dictionary<int, (string, string)>
    {
        [0] = ("Success", "DROP_REASON_UNKNOWN"),
        [2] = ("Invalid packet", ""),
        [3] = ("Interface", ""),
        [4] = ("Interface Decrypted", ""),
        [5] = ("LB, sock cgroup: No backend slot entry found", ""),
        [6] = ("LB, sock cgroup: No backend entry found", ""),
        [7] = ("LB, sock cgroup: Reverse entry update failed", ""),
        [8] = ("LB, sock cgroup: Reverse entry stale", ""),
        [9] = ("Fragmented packet", ""),
        [10] = ("Fragmented packet entry update failed", ""),
        [11] = ("Missed tail call to custom program", ""),
        [12] = ("Interface Decrypting", ""),
        [13] = ("Interface Encrypting", ""),
        [14] = ("LB: sock cgroup: Reverse entry delete succeeded", ""),
        [15] = ("MTU error message", ""),
        [130] = ("Invalid source mac", "INVALID_SOURCE_MAC"),
        [131] = ("Invalid destination mac", "INVALID_DESTINATION_MAC"),
        [132] = ("Invalid source ip", "INVALID_SOURCE_IP"),
        [133] = ("Policy denied", "POLICY_DENIED"),
        [134] = ("Invalid packet", "INVALID_PACKET_DROPPED"),
        [135] = ("CT: Truncated or invalid header", "CT_TRUNCATED_OR_INVALID_HEADER"),
        [136] = ("Fragmentation needed", "CT_MISSING_TCP_ACK_FLAG"),
        [137] = ("CT: Unknown L4 protocol", "CT_UNKNOWN_L4_PROTOCOL"),
        [138] = ("CT: Can't create entry from packet", "CT_CANNOT_CREATE_ENTRY_FROM_PACKET"),
        [139] = ("Unsupported L3 protocol", "UNSUPPORTED_L3_PROTOCOL"),
        [140] = ("Missed tail call", "MISSED_TAIL_CALL"),
        [141] = ("Error writing to packet", "ERROR_WRITING_TO_PACKET"),
        [142] = ("Unknown L4 protocol", "UNKNOWN_L4_PROTOCOL"),
        [143] = ("Unknown ICMPv4 code", "UNKNOWN_ICMPV4_CODE"),
        [144] = ("Unknown ICMPv4 type", "UNKNOWN_ICMPV4_TYPE"),
        [145] = ("Unknown ICMPv6 code", "UNKNOWN_ICMPV6_CODE"),
        [146] = ("Unknown ICMPv6 type", "UNKNOWN_ICMPV6_TYPE"),
        [147] = ("Error retrieving tunnel key", "ERROR_RETRIEVING_TUNNEL_KEY"),
        [148] = ("Error retrieving tunnel options", "ERROR_RETRIEVING_TUNNEL_OPTIONS"),
        [149] = ("Invalid Geneve option", "INVALID_GENEVE_OPTION"),
        [150] = ("Unknown L3 target address", "UNKNOWN_L3_TARGET_ADDRESS"),
        [151] = ("Stale or unroutable IP", "STALE_OR_UNROUTABLE_IP"),
        [152] = ("No matching local container found", "NO_MATCHING_LOCAL_CONTAINER_FOUND"),
        [153] = ("Error while correcting L3 checksum", "ERROR_WHILE_CORRECTING_L3_CHECKSUM"),
        [154] = ("Error while correcting L4 checksum", "ERROR_WHILE_CORRECTING_L4_CHECKSUM"),
        [155] = ("CT: Map insertion failed", "CT_MAP_INSERTION_FAILED"),
        [156] = ("Invalid IPv6 extension header", "INVALID_IPV6_EXTENSION_HEADER"),
        [157] = ("IP fragmentation not supported", "IP_FRAGMENTATION_NOT_SUPPORTED"),
        [158] = ("Service backend not found", "SERVICE_BACKEND_NOT_FOUND"),
        [159] = ("", ""),
        [160] = ("No tunnel/encapsulation endpoint (datapath BUG!)", "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT"),
        [161] = ("NAT 46/64 not enabled", "FAILED_TO_INSERT_INTO_PROXYMAP"),
        [162] = ("Reached EDT rate-limiting drop horizon", "REACHED_EDT_RATE_LIMITING_DROP_HORIZON"),
        [163] = ("Unknown connection tracking state", "UNKNOWN_CONNECTION_TRACKING_STATE"),
        [164] = ("Local host is unreachable", "LOCAL_HOST_IS_UNREACHABLE"),
        [165] = ("No configuration available to perform policy decision", "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION"),
        [166] = ("Unsupported L2 protocol", "UNSUPPORTED_L2_PROTOCOL"),
        [167] = ("No mapping for NAT masquerade", "NO_MAPPING_FOR_NAT_MASQUERADE"),
        [168] = ("Unsupported protocol for NAT masquerade", "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE"),
        [169] = ("FIB lookup failed", "FIB_LOOKUP_FAILED"),
        [170] = ("Encapsulation traffic is prohibited", "ENCAPSULATION_TRAFFIC_IS_PROHIBITED"),
        [171] = ("Invalid identity", "INVALID_IDENTITY"),
        [172] = ("Unknown sender", "UNKNOWN_SENDER"),
        [173] = ("NAT not needed", "NAT_NOT_NEEDED"),
        [174] = ("Is a ClusterIP", "IS_A_CLUSTERIP"),
        [175] = ("First logical datagram fragment not found", "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND"),
        [176] = ("Forbidden ICMPv6 message", "FORBIDDEN_ICMPV6_MESSAGE"),
        [177] = ("Denied by LB src range check", "DENIED_BY_LB_SRC_RANGE_CHECK"),
        [178] = ("Socket lookup failed", "SOCKET_LOOKUP_FAILED"),
        [179] = ("Socket assign failed", "SOCKET_ASSIGN_FAILED"),
        [180] = ("Proxy redirection not supported for protocol", "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL"),
        [181] = ("Policy denied by denylist", "POLICY_DENY"),
        [182] = ("VLAN traffic disallowed by VLAN filter", "VLAN_FILTERED"),
        [183] = ("Incorrect VNI from VTEP", "INVALID_VNI"),
        [184] = ("Failed to update or lookup TC buffer", "INVALID_TC_BUFFER"),
        [185] = ("No SID was found for the IP address", "NO_SID"),
        [186] = ("SRv6 state was removed during tail call", "MISSING_SRV6_STATE"),
        [187] = ("L3 translation from IPv4 to IPv6 failed (NAT46)", "NAT46"),
        [188] = ("L3 translation from IPv6 to IPv4 failed (NAT64)", "NAT64"),
        [189] = ("Authentication required", "AUTH_REQUIRED"),
        [190] = ("No conntrack map found", "CT_NO_MAP_FOUND"),
        [191] = ("No nat map found", "SNAT_NO_MAP_FOUND"),
        [192] = ("Invalid ClusterID", "INVALID_CLUSTER_ID"),
        [193] = ("Unsupported packet protocol for DSR encapsulation", "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP"),
        [194] = ("No egress gateway found", "NO_EGRESS_GATEWAY"),
        [195] = ("Traffic is unencrypted", "UNENCRYPTED_TRAFFIC"),
        [196] = ("TTL exceeded", "TTL_EXCEEDED"),
        [197] = ("No node ID found", "NO_NODE_ID"),
        [198] = ("Rate limited", "DROP_RATE_LIMITED"),
        [199] = ("IGMP handled", "IGMP_HANDLED"),
        [200] = ("IGMP subscribed", "IGMP_SUBSCRIBED"),
        [201] = ("Multicast handled", "MULTICAST_HANDLED"),
        [202] = ("Host datapath not ready", "DROP_HOST_NOT_READY"),
        [203] = ("Endpoint policy program not available", "DROP_EP_NOT_READY"),
        [204] = ("No Egress IP configured", "DROP_NO_EGRESS_IP"),
        [205] = ("Punt to proxy", "DROP_PUNT_PROXY"),
        [206] = ("", ""),
    };

    /// <summary>The monitor text of a code, or "unknown (N)".</summary>
    public static string Text(int code) => All.TryGetValue(code, out var r) && r.Text.Length > 0 ? r.Text : $"unknown ({code})";

    /// <summary>A code from its number, its monitor text or its Hubble enum name (case-insensitive).</summary>
    public static bool TryParse(string text, out int code)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim();
        if (int.TryParse(t, out code))
            return All.ContainsKey(code);
        foreach (var (c, r) in All)
        {
            if ((r.Text.Length > 0 && string.Equals(r.Text, t, StringComparison.OrdinalIgnoreCase))
                || (r.Hubble.Length > 0 && string.Equals(r.Hubble, t, StringComparison.OrdinalIgnoreCase)))
            {
                code = c;
                return true;
            }
        }
        code = 0;
        return false;
    }
}
