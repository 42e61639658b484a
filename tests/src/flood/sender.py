# Bounded UDP SIP sender for flood tests: one or more streams of requests,
# each from its own source addresses (bound sockets, so the kernel sends real
# datagrams from them), paced or as fast as possible, all stopping at a packet
# count and a deadline, whichever comes first.
#
# usage: sender.py SPEC_JSON, where SPEC is
#   {"dst": "198.18.0.1", "port": 5060, "duration": 3.0,
#    "streams": [{"name": "flood", "sources": ["198.18.0.3"],
#                 "method": "INVITE", "user": "100", "rate": 2000,
#                 "count": 6000, "body": 0}]}
# rate is packets per second over the whole stream (its sources take turns);
# 0 sends as fast as the machine allows. body (optional) is a body of that
# many bytes (SDP-like lines): over the MTU, the kernel fragments the
# datagram. Prints a JSON report per stream.
import errno
import json
import signal
import socket
import sys
import time

spec = json.loads(sys.argv[1])
dst, port = spec["dst"], spec["port"]
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
# Variants per stream (distinct Call-IDs and branches), cycled: real floods
# do not repeat one datagram, and building each packet live would cost more
# than sending it.
VARIANTS = 256

stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def body_of(size):
    line = "a=x-filler:" + "x" * 53 + "\r\n"
    text = "v=0\r\n" + line * (size // len(line) + 1)
    return text[:size]


def request(method, user, src, sport, n, name, body=""):
    host = f"[{dst}]" if family == socket.AF_INET6 else dst
    shost = f"[{src}]" if family == socket.AF_INET6 else src
    to = f"sip:{user}@{host}:{port}"
    return (
        f"{method} {to} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {shost}:{sport};branch=z9hG4bK-{name}-{n}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:caller@{shost}>;tag={name}{n}\r\n"
        f"To: <{to}>\r\n"
        f"Call-ID: {name}-{n}@{shost}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:caller@{shost}:{sport}>\r\n"
        f"User-Agent: sipguard-tests\r\n"
        + (f"Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
        + body
    ).encode()


class Stream:
    def __init__(self, s):
        self.name = s["name"]
        self.rate = float(s.get("rate", 0))
        self.count = int(s["count"])
        body = body_of(int(s.get("body", 0)))
        self.socks = []
        self.payloads = []
        for src in s["sources"]:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind((src, 0))
            sock.connect((dst, port))
            sport = sock.getsockname()[1]
            self.socks.append(sock)
            self.payloads.append(
                [
                    request(s["method"], s.get("user", "100"), src, sport, i, self.name, body)
                    for i in range(VARIANTS)
                ]
            )
        self.sent = 0
        self.errors = 0
        self.first = None
        self.last = None

    def done(self):
        return self.sent + self.errors >= self.count

    def send_one(self):
        i = self.sent + self.errors
        k = i % len(self.socks)
        try:
            self.socks[k].send(self.payloads[k][(i // len(self.socks)) % VARIANTS])
            self.sent += 1
        except OSError as e:
            # A full socket or device queue: the datagram was not sent.
            if e.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED):
                raise
            self.errors += 1
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now


streams = [Stream(s) for s in spec["streams"]]
start = time.monotonic()
deadline = start + float(spec["duration"])
due = {id(s): start for s in streams}
while not stop:
    now = time.monotonic()
    if now >= deadline:
        break
    live = [s for s in streams if not s.done()]
    if not live:
        break
    next_due = deadline
    for s in live:
        if s.rate <= 0:
            # Unpaced: a batch, then look at the clock and the paced ones.
            for _ in range(64):
                if s.done():
                    break
                s.send_one()
            next_due = now
            continue
        while due[id(s)] <= now and not s.done():
            s.send_one()
            due[id(s)] += 1.0 / s.rate
        next_due = min(next_due, due[id(s)])
    wait = next_due - time.monotonic()
    if wait > 0:
        time.sleep(min(wait, 0.01))

end = time.monotonic()
report = {
    "elapsed": end - start,
    "streams": {
        s.name: {
            "sent": s.sent,
            "errors": s.errors,
            "active": (s.last - s.first) if s.first is not None else 0.0,
        }
        for s in streams
    },
}
print(json.dumps(report), flush=True)
