set -e
P=fxcap
ip netns add $P-n; ip netns add $P-c; ip netns add $P-s; ip netns add $P-w
for ns in n c s w; do ip -n $P-$ns link set lo up; done
ip link add $P-c0 netns $P-n type veth peer name eth0 netns $P-c
ip link add $P-s0 netns $P-n type veth peer name eth0 netns $P-s
ip link add outer netns $P-n type veth peer name eth0 netns $P-w
N="ip -n $P-n"
$N addr add 10.244.1.1/24 dev $P-c0; $N -6 addr add fd00:1::1/64 dev $P-c0 nodad; $N link set $P-c0 up
$N addr add 10.244.2.1/24 dev $P-s0; $N -6 addr add fd00:2::1/64 dev $P-s0 nodad; $N link set $P-s0 up
$N addr add 198.51.100.1/24 dev outer; $N link set outer up
$N route add 203.0.113.0/24 via 198.51.100.2
for x in c:1 s:2; do ns=${x%:*}; i=${x#*:}
  ip -n $P-$ns addr add 10.244.$i.2/24 dev eth0; ip -n $P-$ns -6 addr add fd00:$i::2/64 dev eth0 nodad; ip -n $P-$ns link set eth0 up
  ip -n $P-$ns route add default via 10.244.$i.1; ip -n $P-$ns -6 route add default via fd00:$i::1
done
ip -n $P-w addr add 198.51.100.2/24 dev eth0; ip -n $P-w link set eth0 up; ip -n $P-w addr add 203.0.113.7/32 dev lo
E="ip netns exec $P-n"
$E sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1 \
  net.netfilter.nf_conntrack_tcp_timeout_time_wait=4 net.netfilter.nf_conntrack_tcp_timeout_close=4 net.netfilter.nf_conntrack_udp_timeout=5 net.netfilter.nf_conntrack_icmp_timeout=4
$E iptables -t nat -A PREROUTING -d 10.96.0.10 -p tcp --dport 80 -m comment --comment "default/web:http" -j DNAT --to-destination 10.244.2.2:8080
$E ip6tables -t nat -A PREROUTING -d fd00:96::10 -p tcp --dport 80 -j DNAT --to-destination [fd00:2::2]:8080
$E iptables -t nat -A POSTROUTING -o outer -j MASQUERADE
$E iptables -t raw -A PREROUTING -i $P-c0 -p udp --dport 5353 -j CT --zone 7
$E iptables -t raw -A PREROUTING -i outer -p udp --sport 5353 -j CT --zone 7
$E iptables -t mangle -A PREROUTING -p udp --dport 5353 -j CONNMARK --set-mark 0x42
