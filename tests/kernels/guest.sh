#!/bin/bash
# The kernel matrix's check, run inside a throwaway VM booted on one Debian
# kernel by `cargo xtask kernels` (the host's root shared read-only, OUT
# writable). It can also run on a host kernel as a control, in namespaces it
# makes itself. Writes one line per check to OUT/checks.txt:
#
#   CHECK NAME ok|FAIL DETAIL
#
#   guest.sh --bin SIPGUARD --out DIR [--fixtures "BIN..."] [--net 198.18.250]
#
# 1. `sipguard check-kernel --json` (every program loaded alone, verified
#    instructions) -> OUT/programs.json
# 2. the fixture suites (BPF_PROG_TEST_RUN tables), one test at a time
# 3. a real attach on a veth between two namespaces: OPTIONS counted by
#    `sipguard stats --json`; trust earned from a 200 OK to REGISTER
#    (`sipguard trusted list --json`); the egress attach mode; kill -9 and a
#    restart that adopts the running filter; a clean stop that removes it.
set -u

BIN=""
OUT=""
FIXTURES=""
NET=198.18.250
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --fixtures) FIXTURES=$2; shift 2 ;;
        --net) NET=$2; shift 2 ;;
        *) echo "guest.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$BIN" ] && [ -n "$OUT" ] || { echo "guest.sh: needs --bin and --out" >&2; exit 2; }
case "$NET" in 198.1[89].*) ;; *) echo "guest.sh: --net must be inside 198.18.0.0/15" >&2; exit 2 ;; esac
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
mkdir -p "$OUT"
: > "$OUT/checks.txt"
HERE=$(cd "$(dirname "$0")" && pwd)
NS=kmx
PEER=kmxp
A=kmx0
B=kmx1
AGENT=""

check() { # NAME ok|FAIL DETAIL...
    local name=$1 verdict=$2
    shift 2
    echo "CHECK $name $verdict $*" | tee -a "$OUT/checks.txt"
}

cleanup() {
    [ -n "$AGENT" ] && kill -KILL "$AGENT" 2>/dev/null
    [ -n "${RESPONDER:-}" ] && kill -KILL "$RESPONDER" 2>/dev/null
    nsenter --net=/run/netns/$NS "$BIN" detach --iface "$A" >/dev/null 2>&1
    ip netns del $NS 2>/dev/null
    ip netns del $PEER 2>/dev/null
}
trap cleanup EXIT

echo "kernel $(uname -r)" > "$OUT/kernel.txt"
mountpoint -q /sys/fs/bpf || mount -t bpf bpffs /sys/fs/bpf
mkdir -p /run/netns /run/sipguard
for m in veth sch_ingress cls_bpf; do modprobe "$m" 2>/dev/null; done

# 1. every program, alone
if "$BIN" check-kernel --json > "$OUT/programs.json" 2> "$OUT/check-kernel.err"; then
    check load ok "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(" ".join("%s=%s" % (p["name"], p["verified_insns"]) for p in r["programs"]), "load_ms=%d" % r["load_ms"])' "$OUT/programs.json")"
else
    check load FAIL "$(tail -c 600 "$OUT/check-kernel.err" | tr '\n' ' ')"
fi

# 2. the fixture suites, but for a test of a third of a million runs that
# takes minutes under emulation (the map it fills behaves the same on every
# kernel; the same property on a few runs is tested on each)
SLOW=real_sources_keep_their_rate_state_through_a_spoofed_flood_larger_than_the_table
for f in $FIXTURES; do
    name=$(basename "$f" | sed 's/-[0-9a-f]*$//')
    log="$OUT/fixtures-$name.log"
    if "$f" --test-threads=1 --skip "$SLOW" > "$log" 2>&1; then v=ok; else v=FAIL; fi
    failed=$(grep -E '^    [a-z_0-9:]+$' "$log" | head -5 | tr -d ' ' | tr '\n' ' ')
    check "fixtures:$name" "$v" "$(grep -E '^test result:' "$log" | tail -1 | cut -c1-120)${failed:+ failed: $failed}"
done

# 3. a real attach
ip netns add $NS && ip netns add $PEER &&
    ip link add $A netns $NS type veth peer name $B netns $PEER &&
    ip -n $NS addr add $NET.1/24 dev $A && ip -n $PEER addr add $NET.2/24 dev $B &&
    ip -n $NS link set lo up && ip -n $PEER link set lo up &&
    ip -n $NS link set $A up && ip -n $PEER link set $B up ||
    { check attach FAIL "could not create the namespaces and veth"; exit 0; }

in_ns() { nsenter --net=/run/netns/$NS "$@"; }

start_agent() { # LOG
    # nsenter execs (no fork), so $! is the agent itself.
    nsenter --net=/run/netns/$NS env SIPGUARD_LOG=info "$BIN" run --iface $A --mode native \
        --metrics off > "$1" 2>&1 &
    AGENT=$!
    for _ in $(seq 1 120); do
        grep -q 'TC egress program\|Error\|error:' "$1" && break
        kill -0 "$AGENT" 2>/dev/null || break
        sleep 0.5
    done
    grep -q 'sipguard attached' "$1"
}

egress_mode() { # LOG -> tcx|netlink|off|none
    if grep -q 'TC egress program attached' "$1"; then
        grep -o 'TC egress program attached.*' "$1" | grep -o 'mode="\?[a-z]*' | head -1 | sed 's/mode="\?//'
    elif grep -q 'TC egress program is not attached' "$1"; then echo off
    else echo none; fi
}

# The server side: answers REGISTER with 200 OK (what earns trust), from
# port 5060 so the egress program sees a SIP response.
nsenter --net=/run/netns/$NS python3 "$HERE/responder.py" $NET.1 > "$OUT/responder.log" 2>&1 &
RESPONDER=$!

if start_agent "$OUT/agent-1.log"; then
    mode=$(egress_mode "$OUT/agent-1.log")
    check attach ok "xdp=$(ip -n $NS -d link show $A | grep -o 'xdp[a-z]*' | head -1) tc_egress=$mode"
    [ "$mode" = tcx ] || [ "$mode" = netlink ] && v=ok || v=FAIL
    check tc_egress "$v" "$mode"
    nsenter --net=/run/netns/$PEER python3 "$HERE/client.py" $NET.2 $NET.1 options 5 >> "$OUT/client.log" 2>&1
    sleep 1
    in_ns "$BIN" stats --json > "$OUT/stats.json" 2>&1
    n=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["classes"]["options"]["pass"]["packets"])' "$OUT/stats.json" 2>/dev/null)
    [ "$n" = 5 ] && v=ok || v=FAIL
    check stats "$v" "options passed=$n of 5"
    nsenter --net=/run/netns/$PEER python3 "$HERE/client.py" $NET.2 $NET.1 register 1 >> "$OUT/client.log" 2>&1
    sleep 1
    in_ns "$BIN" trusted list --json > "$OUT/trusted.json" 2>&1
    grep -q "\"$NET.2\"" "$OUT/trusted.json" && v=ok || v=FAIL
    check trust "$v" "$(tr -d ' \n' < "$OUT/trusted.json" | cut -c1-160)"

    # a crash, and a new agent adopting what is still filtering
    kill -KILL "$AGENT"; wait "$AGENT" 2>/dev/null; AGENT=""
    tc -n $NS filter show dev $A egress > "$OUT/tc-after-crash.txt" 2>&1
    if start_agent "$OUT/agent-2.log" && grep -q 'replaced the running XDP program' "$OUT/agent-2.log"; then
        in_ns "$BIN" trusted list --json > "$OUT/trusted-2.json" 2>&1
        grep -q "\"$NET.2\"" "$OUT/trusted-2.json" && v=ok || v=FAIL
        check adopt "$v" "tc_egress=$(egress_mode "$OUT/agent-2.log"); trust kept: $v"
    else
        check adopt FAIL "$(grep -iE 'error|warn' "$OUT/agent-2.log" | tail -2 | tr '\n' ' ')"
    fi
    # a clean stop leaves nothing on the interface
    kill -INT "$AGENT"; wait "$AGENT" 2>/dev/null; AGENT=""
    left=$( (ip -n $NS -d link show $A | grep -o 'prog/xdp[^ ]*'; tc -n $NS filter show dev $A egress 2>/dev/null | grep -o 'sipguard[a-z_]*'; ls /sys/fs/bpf/sipguard/*/$A 2>/dev/null) | tr '\n' ' ')
    [ -z "$left" ] && v=ok || v=FAIL
    check clean_stop "$v" "left: ${left:-nothing}"
else
    check attach FAIL "$(grep -iE 'error|warn' "$OUT/agent-1.log" | tail -3 | tr '\n' ' ' | cut -c1-500)"
fi
exit 0
