# Counting SIP "server" for flood tests: receives UDP datagrams on PORT (dual
# stack) and counts them by (source address, method). It never answers, so
# spoofed sources get no replies.
#
# The test asks for the counts over a Unix socket (paths do not depend on the
# network namespace, so the test can ask from outside it): on "dump" the
# listener first drains every datagram already queued, then replies with
# JSON, so a dump taken after a flood ended includes the whole flood.
#
# usage: listener.py PORT UNIX_SOCKET_PATH
import json
import os
import selectors
import socket
import sys

port, ctl_path = int(sys.argv[1]), sys.argv[2]

udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
# A big receive buffer, forced past net.core.rmem_max (we run as root), so a
# burst is queued rather than dropped; the test also checks the namespace's
# UDP RcvbufErrors so a loss here could not hide.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
udp.bind(("::", port))
udp.setblocking(False)

try:
    os.unlink(ctl_path)
except FileNotFoundError:
    pass
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.bind(ctl_path)
ctl.listen(4)

counts = {}


def drain():
    while True:
        try:
            data, addr = udp.recvfrom(65535)
        except BlockingIOError:
            return
        src = addr[0]
        if src.startswith("::ffff:"):
            src = src[7:]
        method = data[:16].split(b" ", 1)[0].decode("ascii", "replace")
        key = (src, method)
        counts[key] = counts.get(key, 0) + 1


sel = selectors.DefaultSelector()
sel.register(udp, selectors.EVENT_READ, "udp")
sel.register(ctl, selectors.EVENT_READ, "ctl")
print("listening", port, flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "udp":
            drain()
            continue
        conn, _ = ctl.accept()
        with conn:
            conn.settimeout(5)
            cmd = conn.recv(64).strip()
            drain()
            if cmd == b"dump":
                rows = [[s, m, n] for (s, m), n in counts.items()]
                conn.sendall(json.dumps(rows).encode())
