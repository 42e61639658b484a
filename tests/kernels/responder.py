#!/usr/bin/env python3
"""A registrar stand-in for the kernel matrix: answers every REGISTER and
OPTIONS on ADDR:5060 with 200 OK (the answer that earns a client trust),
for at most 10 minutes.

    responder.py ADDR
"""
import socket
import sys
import time

addr = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 5060))
s.settimeout(1.0)
deadline = time.time() + 600
while time.time() < deadline:
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        continue
    lines = data.decode(errors="replace").split("\r\n")
    if not lines or " " not in lines[0] or lines[0].startswith("SIP/2.0"):
        continue
    keep = [l for l in lines[1:] if l.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
    reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
    s.sendto(reply.encode(), peer)
    print("answered", lines[0], "from", peer, flush=True)
