#!/usr/bin/env bash
# The agent-scale process measurement of BENCHMARKS.md ("Agent scale", issue #20 goal 6):
# a release `lb run --dataplane xdp --xdp-mode generic --no-pin` in a private network namespace
# with SERVICES services x REALS reals (default 1,000 x 10) on one end of a veth pair, a permanent
# neighbour entry for every real, no checks, default table size. Prints one line per measurement:
# start-up to /readyz 200 (polled every 20 ms), start-up until `lb status` shows no pick
# fingerprint "pending" (polled every 100 ms), VmRSS/VmHWM 2 s after, `lb backends` wall time,
# and `lb reload` of one changed real (wall time around the CLI, and every step timing of the agent's
# reload line: read_ms parse_ms host_ms switch_ms summary_ms desired_ms apply_ms log_ms
# monitor_ms total_ms, and reused_blocks: the [[virtual_server]] blocks not parsed again).
# Needs root. Usage: tests/bench/agent-scale.sh [LB_BINARY] (default target/release/lb);
# KEEP_LOG=FILE keeps the agent's log (timestamps of the start-up's steps).
set -euo pipefail
LB=${1:-target/release/lb}
SERVICES=${SERVICES:-1000}
REALS=${REALS:-10}
RELOADS=${RELOADS:-4}
NS=lbscale$$
DIR=$(mktemp -d /tmp/lb-agent-scale.XXXXXX)
PID=
LBPID=
cleanup() {
    # `ip netns exec` runs lb as its child: stop lb itself and wait for its clean stop.
    if [ -n "$LBPID" ]; then kill "$LBPID" 2>/dev/null || true; fi
    if [ -n "$PID" ]; then wait "$PID" 2>/dev/null || true; fi
    ip netns del "$NS" 2>/dev/null || true
    if [ -n "${KEEP_LOG:-}" ]; then cp "$DIR/lb.log" "$KEEP_LOG" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT
trap "exit 1" INT TERM
ms() { echo $(( $(date +%s%N) / 1000000 )); }
in_ns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS"
in_ns ip link set lo up
in_ns ip link add lbs0 type veth peer name lbs1
in_ns ip link set lbs0 up
in_ns ip link set lbs1 up
in_ns ip addr add 10.0.0.1/8 dev lbs0

# Reals 10.1.0.1 ...: every one on the link with a permanent neighbour entry.
real() { local k=$1; echo "10.$(( k / 62500 + 1 )).$(( k / 250 % 250 )).$(( k % 250 + 1 ))"; }
{
    for ((k = 0; k < SERVICES * REALS; k++)); do
        echo "neigh replace $(real $k) lladdr 52:54:00:00:00:01 dev lbs0 nud permanent"
    done
} > "$DIR/neigh.batch"
in_ns ip -batch "$DIR/neigh.batch"

write_config() {
    local changed_weight=$1
    {
        printf '[dataplane]\nmax_services = %d\nmax_reals = %d\n' $((SERVICES + 24)) $((SERVICES * REALS + 16))
        for ((s = 0; s < SERVICES; s++)); do
            printf '[[virtual_server]]\nvip = "10.200.%d.%d"\nport = 80\ninterface = "lbs0"\n' $((s / 250)) $((s % 250 + 1))
            for ((i = 0; i < REALS; i++)); do
                k=$((s * REALS + i))
                if [ $s -eq $((SERVICES / 2)) ] && [ $i -eq 3 ]; then
                    printf '[[virtual_server.real_server]]\naddress = "%s"\nweight = %d\n' "$(real $k)" "$changed_weight"
                else
                    printf '[[virtual_server.real_server]]\naddress = "%s"\n' "$(real $k)"
                fi
            done
        done
    } > "$DIR/lb.toml.tmp"
    mv "$DIR/lb.toml.tmp" "$DIR/lb.toml"
}
write_config 1

echo "lb: $($LB --version)"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "size: $SERVICES services x $REALS reals"
start=$(ms)
in_ns "$LB" run -c "$DIR/lb.toml" --socket "$DIR/lb.sock" --dataplane xdp --xdp-mode generic \
    --no-pin --metrics 127.0.0.1:9911 --log-level info 2> "$DIR/lb.log" &
PID=$!
until LBPID=$(pgrep -P "$PID" -x lb) || LBPID=$(pgrep -P "$PID"); do sleep 0.005; done
until [ "$(in_ns curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9911/readyz 2>/dev/null)" = 200 ]; do
    if ! kill -0 "$PID" 2>/dev/null; then echo "lb exited:"; tail -20 "$DIR/lb.log"; exit 1; fi
    if [ $(( $(ms) - start )) -gt 120000 ]; then echo "not ready after 120 s"; exit 1; fi
    sleep 0.02
done
echo "start_to_readyz_ms $(( $(ms) - start ))"
# Pick fingerprints are hashed after serving starts ("pending" in `lb status` until then).
until ! in_ns "$LB" status --json --socket "$DIR/lb.sock" | grep -q '"fingerprint": *"pending"'; do
    if [ $(( $(ms) - start )) -gt 120000 ]; then echo "fingerprints pending after 120 s"; exit 1; fi
    sleep 0.1
done
echo "start_to_fingerprints_known_ms $(( $(ms) - start ))"
sleep 2
rss() { grep -E "^$1:" /proc/$LBPID/status | awk '{printf "%.1f", $2/1024}'; }
echo "rss_after_start_mib VmRSS $(rss VmRSS) VmHWM $(rss VmHWM)"
for i in 1 2 3; do
    t=$(ms); lines=$(in_ns "$LB" backends --socket "$DIR/lb.sock" | wc -l)
    echo "backends_ms $(( $(ms) - t )) ($lines lines)"
done
for ((r = 1; r <= RELOADS; r++)); do
    write_config $(( r + 1 ))
    t=$(ms); in_ns "$LB" reload --socket "$DIR/lb.sock" > /dev/null
    wall=$(( $(ms) - t ))
    agent=$(grep 'configuration reloaded' "$DIR/lb.log" | tail -1 | grep -oE '[a-z_]+_(ms|blocks)=[0-9]+' | tr '\n' ' ')
    echo "reload_one_real_ms $wall (agent: $agent)"
done
echo "rss_after_reloads_mib VmRSS $(rss VmRSS) VmHWM $(rss VmHWM)"
# Again once the freeing beside the last reply (and its trim) has surely finished.
sleep 2
echo "rss_2s_after_reloads_mib VmRSS $(rss VmRSS) VmHWM $(rss VmHWM)"
grep -E 'timing|took|_ms=' "$DIR/lb.log" | grep -v 'configuration reloaded' | head -20 || true
