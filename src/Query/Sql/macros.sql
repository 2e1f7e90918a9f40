-- Helper macros over recordings. Pure SQL: no extension is loaded.
-- Addresses are stored as text (10.0.0.1, fd00::1); ports and identities as unsigned integers.

-- fx_ip4(addr): an IPv4 address as an integer, NULL when addr is not dotted-quad IPv4.
CREATE MACRO fx_ip4(addr) AS
    CASE WHEN regexp_full_match(addr, '(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}') THEN
        (split_part(addr, '.', 1)::UBIGINT << 24) + (split_part(addr, '.', 2)::UBIGINT << 16)
        + (split_part(addr, '.', 3)::UBIGINT << 8) + split_part(addr, '.', 4)::UBIGINT
    END;

-- fx_ip6_groups(part): the colon-separated groups of one side of '::'.
CREATE MACRO fx_ip6_groups(part) AS CASE WHEN part = '' THEN []::VARCHAR[] ELSE string_split(part, ':') END;

-- fx_ip6_hex(addr): an IPv6 address as 32 lower-case hex digits ('::' expanded), NULL when addr is not IPv6.
CREATE MACRO fx_ip6_hex(addr) AS (
    SELECT CASE WHEN length(h) = 32 AND regexp_full_match(h, '[0-9a-f]{32}') THEN h END
    FROM (SELECT array_to_string(list_transform(g, x -> lpad(lower(x), 4, '0')), '') AS h
          FROM (SELECT CASE
                    WHEN NOT contains(addr, ':') THEN NULL
                    WHEN contains(addr, '::') THEN list_concat(
                        fx_ip6_groups(split_part(addr, '::', 1)),
                        list_transform(range(8 - len(fx_ip6_groups(split_part(addr, '::', 1))) - len(fx_ip6_groups(split_part(addr, '::', 2)))), x -> '0'),
                        fx_ip6_groups(split_part(addr, '::', 2)))
                    ELSE string_split(addr, ':') END AS g)));

-- fx_hex_digit(d): the value of one hex digit.
CREATE MACRO fx_hex_digit(d) AS position(lower(d) IN '0123456789abcdef') - 1;

-- fx_in_cidr(addr, cidr): whether addr lies in cidr (IPv4 or IPv6; a bare address is a /32 or /128).
CREATE MACRO fx_in_cidr(addr, cidr) AS
    CASE WHEN contains(cidr, ':') THEN (
        SELECT a IS NOT NULL AND n IS NOT NULL AND left(a, p // 4) = left(n, p // 4)
            AND (p % 4 = 0 OR (fx_hex_digit(substr(a, p // 4 + 1, 1)) >> (4 - p % 4)) = (fx_hex_digit(substr(n, p // 4 + 1, 1)) >> (4 - p % 4)))
        FROM (SELECT fx_ip6_hex(addr) AS a, fx_ip6_hex(split_part(cidr, '/', 1)) AS n,
                     coalesce(TRY_CAST(nullif(split_part(cidr, '/', 2), '') AS INTEGER), 128) AS p))
    ELSE (
        SELECT a IS NOT NULL AND n IS NOT NULL AND p BETWEEN 0 AND 32 AND (a >> (32 - p)) = (n >> (32 - p))
        FROM (SELECT fx_ip4(addr) AS a, fx_ip4(split_part(cidr, '/', 1)) AS n,
                     coalesce(TRY_CAST(nullif(split_part(cidr, '/', 2), '') AS INTEGER), 32) AS p))
    END;

-- fx_is_multicast(addr): whether addr is a multicast or broadcast address (224.0.0.0/4, 255.255.255.255, ff00::/8).
CREATE MACRO fx_is_multicast(addr) AS
    coalesce(fx_in_cidr(addr, '224.0.0.0/4') OR addr = '255.255.255.255' OR fx_in_cidr(addr, 'ff00::/8'), false);

-- fx_addr(addr, port): address and port as cilium monitor prints them (10.0.0.1:80, [fd00::1]:80); the bare address when port is NULL.
CREATE MACRO fx_addr(addr, port) AS
    CASE WHEN port IS NULL THEN addr WHEN contains(addr, ':') THEN '[' || addr || ']:' || port ELSE addr || ':' || port END;

-- fx_proto_name(n): the IP protocol number's name (tcp, udp, icmp, icmpv6, sctp) or the number as text.
CREATE MACRO fx_proto_name(n) AS
    CASE n WHEN 1 THEN 'icmp' WHEN 6 THEN 'tcp' WHEN 17 THEN 'udp' WHEN 58 THEN 'icmpv6' WHEN 132 THEN 'sctp' ELSE CAST(n AS VARCHAR) END;

-- fx_proto_num(name): the IP protocol number of a protocol name as stored (tcp -> 6); the number when name is one.
CREATE MACRO fx_proto_num(name) AS
    CASE lower(name) WHEN 'icmp' THEN 1 WHEN 'tcp' THEN 6 WHEN 'udp' THEN 17 WHEN 'icmpv6' THEN 58 WHEN 'sctp' THEN 132
        ELSE TRY_CAST(name AS INTEGER) END;

-- fx_drop_reason(code): Cilium's name for a drop reason code (133 -> Policy denied), as cilium monitor prints it.
CREATE MACRO fx_drop_reason(p_code) AS
    coalesce((SELECT r.name FROM drop_reasons r WHERE r.code = CAST(p_code AS INTEGER)), 'Unknown reason ' || CAST(p_code AS VARCHAR));

-- fx_verdict_by(action, match, rules, allowed_by, denied_by, rule_id): what decided a policy verdict, as a phrase:
-- 'allowed by RULES' / 'denied by RULES' (the rules, else the policies as Hubble names them, namespace/name), or
-- 'default deny' when a deny had no rule (this datapath's rule_id 0; a Hubble deny that matched nothing, match none).
-- NULL when the source does not say.
CREATE MACRO fx_verdict_by(p_action, p_match, p_rules, p_allowed_by, p_denied_by, p_rule_id) AS
    CASE WHEN p_action = 'allow' THEN 'allowed by ' || coalesce(p_rules, p_allowed_by)
         WHEN coalesce(p_rules, p_denied_by) IS NOT NULL THEN 'denied by ' || coalesce(p_rules, p_denied_by)
         WHEN p_rule_id = 0 OR (p_rule_id IS NULL AND p_match = 'none') THEN 'default deny' END;

-- fx_drop_by(reason, rules, denied_by): what denied a policy drop, as a phrase: 'denied by RULES' (a 181, or what the
-- source named), 'default deny' for a 133 no rule named (Policy denied: nothing allowed the packet); NULL for other drops.
CREATE MACRO fx_drop_by(p_reason, p_rules, p_denied_by) AS
    CASE WHEN coalesce(p_rules, p_denied_by) IS NOT NULL THEN 'denied by ' || coalesce(p_rules, p_denied_by)
         WHEN p_reason = 133 THEN 'default deny' END;

-- fx_identity_labels(id [, rec := recording]): the labels of a security identity (reserved ones included).
CREATE MACRO fx_identity_labels(p_identity, rec := NULL) AS
    coalesce((SELECT first(i.labels ORDER BY i.recording) FROM identities i WHERE i.identity = CAST(p_identity AS UINTEGER) AND (rec IS NULL OR i.recording = rec)),
             (SELECT r.labels FROM reserved_identities r WHERE r.identity = CAST(p_identity AS UINTEGER)));

-- fx_pod(addr [, rec := recording]): 'namespace/pod' of the endpoint with this address, NULL when none.
CREATE MACRO fx_pod(p_addr, rec := NULL) AS
    (SELECT first(e.namespace || '/' || e.pod ORDER BY e.recording) FROM endpoints e WHERE e.ip = p_addr AND (rec IS NULL OR e.recording = rec));
