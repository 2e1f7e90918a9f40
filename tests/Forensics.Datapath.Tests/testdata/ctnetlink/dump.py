import socket, struct, sys
out=open(sys.argv[1],'w')
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 0))
req = struct.pack('=IHHII', 20, (1 << 8) | 1, 0x301, 77, 0) + bytes([0, 0, 0, 0])
s.send(req)
while True:
    d = s.recv(65536)
    out.write('dump ' + d.hex() + '\n')
    t = struct.unpack_from('=H', d, 4)[0]
    if t == 3 or t == 2:
        break
