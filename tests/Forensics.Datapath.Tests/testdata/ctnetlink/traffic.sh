P=fxcap
ip netns exec $P-s python3 -c '
import socket,threading
def srv(fam, addr):
    l=socket.socket(fam); fam==socket.AF_INET6 and l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,1); l.bind((addr,8080)); l.listen(10); l.settimeout(6)
    try:
        c,_=l.accept(); c.recv(10); c.sendall(b"ok"); c.close()
    except Exception: pass
t=[threading.Thread(target=srv,args=a) for a in ((socket.AF_INET,"0.0.0.0"),(socket.AF_INET6,"::"))]
[x.start() for x in t]; [x.join() for x in t]' &
ip netns exec $P-w python3 -c '
import socket
u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("203.0.113.7",5353)); u.settimeout(6)
try:
    d,a=u.recvfrom(100); u.sendto(b"pong",a)
except Exception: pass' &
sleep 0.5
ip netns exec $P-c python3 -c '
import socket
for fam, addr in ((socket.AF_INET,"10.96.0.10"),(socket.AF_INET6,"fd00:96::10")):
    s=socket.socket(fam); s.settimeout(3); s.connect((addr,80)); s.sendall(b"hi"); s.recv(10); s.close()
u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3); u.sendto(b"ping",("203.0.113.7",5353)); print(u.recvfrom(100))'
ip netns exec $P-c python3 -c "
import socket,struct
s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)
h=struct.pack(\"!BBHHH\",8,0,0,0x1234,1); c=0
for i in range(0,len(h),2): c+=(h[i]<<8)+h[i+1]
c=(c>>16)+(c&0xffff); c=~c&0xffff
s.sendto(struct.pack(\"!BBHHH\",8,0,c,0x1234,1),(\"10.244.2.2\",0)); print(len(s.recv(100)))"
wait
