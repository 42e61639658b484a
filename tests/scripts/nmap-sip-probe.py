#!/usr/bin/env python3
"""Send the SIP OPTIONS probe Nmap's NSE sip library sends (nselib/sip.lua:
User-Agent "Nmap NSE", user "nm"), once, over UDP, and print the answer.

nmap itself is not needed: the request is built here the way sip.lua's
Request:__tostring builds it, with the user "nm" Nmap's SIP probes use.

usage: nmap-sip-probe.py SERVER_IP [PORT]
"""
import random
import socket
import string
import sys


def rand(n):
    chars = string.ascii_letters + string.digits + "_"
    return "".join(random.choice(chars) for _ in range(n))


def main():
    host = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 5060
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    lhost, lport = s.getsockname()
    lines = [
        f"OPTIONS sip:nm@{host} SIP/2.0",
        f"Via: SIP/2.0/UDP {lhost}:{lport};rport;branch=z9hG4bK{rand(25)}",
        "Max-Forwards: 70",
        f"From: <sip:nm@{host}>;tag={rand(20)}",
        f"To: <sip:nm@{host}>",
        f"Call-ID: {rand(20)}",
        "CSeq: 1234 OPTIONS",
        "User-Agent: Nmap NSE",
        f"Contact: <sip:nm@{lhost}:{lport}>",
        "Expires: 300",
        "Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, SUBSCRIBE, NOTIFY, REFER, MESSAGE, OPTIONS",
        "Accept: application/sdp",
        "Content-Length:  0",
        "",
        "",
    ]
    s.send("\r\n".join(lines).encode())
    s.settimeout(2)
    try:
        data = s.recv(65535)
        print(data.decode(errors="replace").splitlines()[0])
    except socket.timeout:
        print("no answer")


if __name__ == "__main__":
    main()
