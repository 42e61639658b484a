#!/usr/bin/env python3
"""A SIP client for the kernel matrix: sends COUNT requests of METHOD
(options or register) from SRC:5060 to DST:5060 and waits briefly for each
answer.

    client.py SRC DST options|register COUNT
"""
import socket
import sys

src, dst, method, count = sys.argv[1], sys.argv[2], sys.argv[3].upper(), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 5060))
s.settimeout(1.0)
for n in range(count):
    msg = (
        f"{method} sip:km@{dst} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK-km{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:km@{dst}>;tag=km{n}\r\n"
        f"To: <sip:km@{dst}>\r\n"
        f"Call-ID: km-{n}@{src}\r\n"
        f"CSeq: {n + 1} {method}\r\n"
        f"Contact: <sip:km@{src}:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    s.sendto(msg.encode(), (dst, 5060))
    try:
        data, _ = s.recvfrom(65535)
        print(method, n, "->", data.split(b"\r\n", 1)[0].decode(errors="replace"))
    except socket.timeout:
        print(method, n, "-> no answer")
