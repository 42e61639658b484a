#!/usr/bin/env bash
# Record the packet captures in tests/fixtures/captures: real SIPVicious
# scans, an Nmap-style OPTIONS probe and legitimate sipp traffic, sent to a
# Kamailio (tests/kamailio/scanner.cfg) or a sipp UAS in a private namespace
# lab, with no sipguard attached. Only the sender->server UDP packets to 5060
# are kept (tshark on the server's interface).
#
#   sudo tests/scripts/capture-scanners.sh [OUTDIR]
#
# OUTDIR defaults to tests/fixtures/captures; KEEP=1 keeps the scratch
# directory (tool and Kamailio logs). Needs root, iproute2, nsenter,
# kamailio, sipp, tshark, python3 and sipvicious (sipvicious_svmap,
# sipvicious_svwar, sipvicious_svcrack on PATH).
#
# Addresses are from 198.18.0.0/15 only, inside namespaces this script
# creates and deletes; every namespace gets a blackhole default route, so
# nothing can leave the lab.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TESTS=$(dirname "$HERE")
OUT=$(realpath -m "${1:-$TESTS/fixtures/captures}")
mkdir -p "$OUT"

P="sgcap$$"
SW="$P-sw" SRV="$P-srv" CLI="$P-cli" ATK="$P-atk"
SERVER=198.18.0.1 CLIENT=198.18.0.2 ATTACKER=198.18.0.3
# The known users and their password, as in tests/scripts/sipp-register.xml.
KNOWN_USERS='^(1001|1005)$'
PASSWORD=lab-secret
WORK=$(mktemp -d "/tmp/$P.XXXX")
PIDS=()
cd "$WORK"

cleanup() {
	# Only the processes this script started, by PID.
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	for ns in "$ATK" "$CLI" "$SRV" "$SW"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	[ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

in_ns() {
	local ns=$1
	shift
	nsenter --net="/run/netns/$ns" "$@"
}

wait_for() {
	# wait_for SECONDS COMMAND...: poll until COMMAND succeeds.
	local until=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < until)) || { echo "timed out: $*" >&2; return 1; }
		sleep 0.1
	done
}

udp_listening() { [ -n "$(in_ns "$SRV" ss -Hlun 'sport = :5060')" ]; }

# --- lab: three nodes on a bridge in a fourth namespace -------------------
for ns in "$SW" "$SRV" "$CLI" "$ATK"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
node() {
	local ns=$1 addr=$2 port=$3
	ip link add eth0 netns "$ns" type veth peer name "$port" netns "$SW"
	ip -n "$SW" link set "$port" master br0 up
	ip -n "$ns" addr add "$addr/16" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add blackhole default
}
node "$SRV" "$SERVER" p-srv
node "$CLI" "$CLIENT" p-cli
node "$ATK" "$ATTACKER" p-atk

# --- capture helper --------------------------------------------------------
# capture NAME SRC COMMAND...: run COMMAND while tshark on the server keeps
# SRC's UDP packets to SERVER:5060, then write OUT/NAME.pcap.
capture() {
	local name=$1 src=$2
	shift 2
	local pcap="$WORK/$name.pcap" log="$WORK/$name.tshark"
	# nsenter execs tshark, so $! is tshark's own PID.
	nsenter --net="/run/netns/$SRV" tshark -i eth0 -F pcap -w "$pcap" -q \
		-f "src host $src and dst host $SERVER and udp dst port 5060" 2>"$log" &
	local tshark=$!
	PIDS+=("$tshark")
	wait_for 20 grep -qs "Capturing on" "$log"
	echo "== $name: $*"
	"$@" || echo "(exit status $?)"
	# Let the last retransmissions arrive.
	sleep 2
	kill -TERM "$tshark"
	wait "$tshark" || echo "tshark exited with $?"
	cp "$pcap" "$OUT/$name.pcap"
	chmod 644 "$OUT/$name.pcap"
	echo "   $(tshark -r "$OUT/$name.pcap" 2>/dev/null | wc -l) packets -> $OUT/$name.pcap"
}

# --- Kamailio as the scanned PBX ------------------------------------------
sed -e "s/@LISTEN@/$SERVER/g" -e "s/@KNOWN_USERS@/$KNOWN_USERS/g" \
	-e "s/@PASSWORD@/$PASSWORD/g" "$TESTS/kamailio/scanner.cfg" >"$WORK/scanner.cfg"
nsenter --net="/run/netns/$SRV" kamailio -f "$WORK/scanner.cfg" -DD -E -x tlsf -m 64 -Y "$WORK" -w "$WORK" \
	2>"$WORK/kamailio.log" &
KAMAILIO=$!
PIDS+=("$KAMAILIO")
wait_for 20 udp_listening

ATK_RUN=(in_ns "$ATK" timeout 60)
capture svmap "$ATTACKER" "${ATK_RUN[@]}" sipvicious_svmap "$SERVER"
capture svwar-register "$ATTACKER" "${ATK_RUN[@]}" \
	sipvicious_svwar -m REGISTER -e 1000-1009 --maximumtime 3 "$SERVER"
capture svwar-invite "$ATTACKER" "${ATK_RUN[@]}" \
	sipvicious_svwar -m INVITE -e 1000-1009 --maximumtime 3 "$SERVER"
printf '%s\n' 123456 password 1001 admin "$PASSWORD" >"$WORK/passwords.txt"
capture svcrack "$ATTACKER" "${ATK_RUN[@]}" \
	sipvicious_svcrack -u 1001 -d "$WORK/passwords.txt" --maximumtime 3 "$SERVER"
capture nmap-options "$ATTACKER" "${ATK_RUN[@]}" python3 "$HERE/nmap-sip-probe.py" "$SERVER"
capture legit-sipp-register "$CLIENT" in_ns "$CLI" timeout 60 \
	sipp -sf "$HERE/sipp-register.xml" "$SERVER:5060" -i "$CLIENT" -p 5070 \
	-m 3 -r 1 -timeout 30s -nostdin -trace_err -error_file "$WORK/sipp-register.err"

# --- a sipp UAS for a legitimate call --------------------------------------
kill "$KAMAILIO"
wait "$KAMAILIO" || true
wait_for 20 bash -c "! [ -n \"\$(nsenter --net=/run/netns/$SRV ss -Hlun 'sport = :5060')\" ]"
(cd "$WORK" && exec nsenter --net="/run/netns/$SRV" sipp -sn uas -i "$SERVER" -p 5060 -nostdin \
	>"$WORK/uas.log" 2>&1) &
PIDS+=("$!")
wait_for 20 udp_listening
capture legit-sipp-invite "$CLIENT" in_ns "$CLI" timeout 60 \
	sipp -sn uac "$SERVER:5060" -i "$CLIENT" -p 5070 -m 3 -r 1 -timeout 30s -nostdin
