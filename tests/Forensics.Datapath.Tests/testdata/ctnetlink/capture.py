# Captures raw ctnetlink datagrams (events of the three groups and one table dump) as hex, one per line: "<group> <hex>"
import socket, sys, select, struct, time, os
out = open(sys.argv[1], 'w')
dur = float(sys.argv[2])
socks = {}
for g, name in ((1, 'new'), (2, 'update'), (3, 'destroy')):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    s.bind((0, 0))
    s.setsockopt(270, 1, g)
    socks[s.fileno()] = (s, name)
open('/tmp/ctcap/ready', 'w').close()
end = time.time() + dur
while time.time() < end:
    r, _, _ = select.select([v[0] for v in socks.values()], [], [], 0.1)
    for s in r:
        d = s.recv(65536)
        out.write(socks[s.fileno()][1] + ' ' + d.hex() + '\n')
out.close()
