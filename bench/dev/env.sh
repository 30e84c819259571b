#!/usr/bin/env bash
# Developer loop for profiling: the single-host bench topology in namespaces vdev-a,
# vdev-sw, vdev-b (veths, clients 198.18.0.1/.2), vswitchd in vdev-sw, and quick
# measurements. Not part of CI.
#   bench/dev/env.sh up [vswitchd args…]   |  down
#   bench/dev/env.sh pps [SECS]            trafgen 64 B frames A->B, prints fwd kpps
#   bench/dev/env.sh rr [SECS]             sockperf ping-pong p50/p99
#   bench/dev/env.sh tcp [SECS] [STREAMS]  iperf3
#   bench/dev/env.sh perf CMD…             perf record vswitchd while CMD runs
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VSWITCHD_BIN_DIR:-$HERE/../../target/release}
A=vdev-a SW=vdev-sw B=vdev-b D=/tmp/vdev
CTL() { "$BIN/vswitchctl" --socket $D/sock "$@"; }
ctr() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }
case "${1:-}" in
  up)
    shift; mkdir -p $D
    for n in $A $SW $B; do ip netns add $n; ip -n $n link set lo up; ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
    "$BIN/vswitchd" --netns $SW --state-dir $D/state --socket $D/sock "$@" > $D/log 2>&1 &
    echo $! > $D/pid
    for _ in $(seq 50); do CTL ping >/dev/null 2>&1 && break; sleep 0.1; done
    CTL network create bench --subnet 198.18.0.0/24 --gateway 198.18.0.254 >/dev/null
    if [ "${TAP:-0}" = 1 ]; then   # clients on vswitchd TAPs
      CTL port add bench vsa --type tap >/dev/null; CTL port add bench vsb --type tap >/dev/null
      ip -n $SW link set vsa netns $A; ip -n $SW link set vsb netns $B
      ip -n $A link set vsa name eth0; ip -n $B link set vsb name eth0
    else
      ip -n $A link add eth0 type veth peer name va netns $SW
      ip -n $B link add eth0 type veth peer name vb netns $SW
      ip -n $SW link set va up; ip -n $SW link set vb up
      CTL port add bench va >/dev/null; CTL port add bench vb >/dev/null
    fi
    ip -n $A addr add 198.18.0.1/24 dev eth0; ip -n $A link set eth0 up
    ip -n $B addr add 198.18.0.2/24 dev eth0; ip -n $B link set eth0 up
    ip netns exec $A ping -c 2 -W 1 198.18.0.2 >/dev/null && echo up ;;
  down)
    [ -f $D/pid ] && kill "$(cat $D/pid)" 2>/dev/null || true
    for n in $A $SW $B; do ip netns del $n 2>/dev/null || true; done
    rm -rf $D ;;
  pps)
    s=${2:-6}
    dmac=$(ip netns exec $B cat /sys/class/net/eth0/address); smac=$(ip netns exec $A cat /sys/class/net/eth0/address)
    printf '{ eth(da=%s, sa=%s), ipv4(saddr=198.18.0.1, daddr=198.18.0.2, ttl=64, df), udp(sp=9, dp=9), fill(0, 18) }\n' "$dmac" "$smac" > $D/tg.cfg
    timeout -s INT "$s" ip netns exec $A trafgen -i $D/tg.cfg -o eth0 -P 1 --no-sock-mem -Q -C >/dev/null 2>&1 &
    sleep 1; a0=$(ctr $A eth0 tx_packets); b0=$(ctr $B eth0 rx_packets)
    sleep $((s - 2)); a1=$(ctr $A eth0 tx_packets); b1=$(ctr $B eth0 rx_packets)
    wait || true
    echo "offered $(( (a1 - a0) / (s - 2) / 1000 )) kpps  forwarded $(( (b1 - b0) / (s - 2) / 1000 )) kpps" ;;
  rr)
    s=${2:-5}
    ip netns exec $B sockperf server -i 198.18.0.2 >/dev/null 2>&1 & sp=$!
    sleep 0.5
    ip netns exec $A sockperf ping-pong -i 198.18.0.2 -m 64 -t "$s" --full-rtt 2>&1 | grep -E "percentile (50|99)\.000|Summary: Latency" || true
    kill $sp ;;
  tcp)
    s=${2:-5} p=${3:-1}
    ip netns exec $B iperf3 -s -1 -D; sleep 0.3
    ip netns exec $A iperf3 -c 198.18.0.2 -t "$s" -P "$p" | grep -E "sender|receiver" | tail -2 ;;
  perf)
    shift; perf record -F 4999 -g -p "$(cat $D/pid)" -o $D/perf.data -- sleep 100000 >/dev/null 2>&1 & pp=$!
    sleep 0.5; "$0" "$@"; kill -INT $pp; wait $pp 2>/dev/null || true
    perf report -i $D/perf.data --no-children --percent-limit 1.5 --stdio 2>/dev/null | grep -v "^$" | head -70 ;;
  *) sed -n 2,10p "$0"; exit 2 ;;
esac
