#!/usr/bin/env bash
# Developer loop for the encrypted mesh: the shared harness's dual topology in namespaces
# vmd-a, vmd-h1, vmd-h2, vmd-b (client veths, a veth underlay 198.19.0.1/.2), one
# vswitchd per host in password mode, an encrypted overlay network, clients 198.18.0.1/.2
# at MTU 1404. Not part of CI.
#   bench/dev/mesh-env.sh up [vswitchd args…]  |  down
#   bench/dev/mesh-env.sh tcp [SECS] [STREAMS]     iperf3 A->B
#   bench/dev/mesh-env.sh rr [SECS]                sockperf ping-pong p50/p99
#   bench/dev/mesh-env.sh pps [SECS]               trafgen 64 B frames A->B
#   bench/dev/mesh-env.sh threads CMD…             per-thread CPU while CMD runs
#   bench/dev/mesh-env.sh perf CMD…                perf record -a while CMD runs
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VSWITCHD_BIN_DIR:-$HERE/../../target/release}
A=vmd-a H1=vmd-h1 H2=vmd-h2 B=vmd-b D=/tmp/vmd
CTL() { "$BIN/vswitchctl" --socket "$D/$1.sock" "${@:2}"; }
case "${1:-}" in
  up)
    shift; mkdir -p $D
    for n in $A $H1 $H2 $B; do ip netns add $n; ip -n $n link set lo up; ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
    ip -n $A link add eth0 type veth peer name va netns $H1
    ip -n $B link add eth0 type veth peer name vb netns $H2
    ip -n $H1 link add ul0 type veth peer name ul0 netns $H2
    ip -n $H1 addr add 198.19.0.1/24 dev ul0; ip -n $H2 addr add 198.19.0.2/24 dev ul0
    for h in $H1 $H2; do ip -n $h link set ul0 up; done
    ip -n $H1 link set va mtu 1404 up; ip -n $H2 link set vb mtu 1404 up
    for h in 1 2; do
      ns=$H1; me=198.19.0.1; port=va
      [ $h = 2 ] && { ns=$H2; me=198.19.0.2; port=vb; }
      args=(--state-dir $D/state$h --socket $D/h$h.sock --netns $ns --advertise $me --mesh-password dev-secret)
      [ $h = 2 ] && args+=(--mesh-peer 198.19.0.1)
      "$BIN/vswitchd" "${args[@]}" "$@" > $D/log$h 2>&1 &
      echo $! > $D/pid$h
      for _ in $(seq 50); do CTL h$h ping >/dev/null 2>&1 && break; sleep 0.1; done
      CTL h$h network create bench --driver overlay --encrypted --vni 42 --subnet 198.18.0.0/24 --gateway 198.18.0.254 >/dev/null
      CTL h$h port add bench $port >/dev/null
    done
    ip -n $A addr add 198.18.0.1/24 dev eth0; ip -n $A link set eth0 mtu 1404 up
    ip -n $B addr add 198.18.0.2/24 dev eth0; ip -n $B link set eth0 mtu 1404 up
    for _ in $(seq 50); do ip netns exec $A ping -c 1 -W 1 198.18.0.2 >/dev/null 2>&1 && { echo up; exit 0; }; done
    echo "no ping A->B" >&2; exit 1 ;;
  down)
    for h in 1 2; do [ -f $D/pid$h ] && kill "$(cat $D/pid$h)" 2>/dev/null || true; done
    sleep 0.3
    for n in $A $H1 $H2 $B; do ip netns del $n 2>/dev/null || true; done
    rm -rf $D ;;
  tcp)
    s=${2:-5} p=${3:-1}
    ip netns exec $B iperf3 -s -1 -D; sleep 0.3
    ip netns exec $A iperf3 -c 198.18.0.2 -t "$s" -O 1 -P "$p" | grep -E "receiver" | tail -1 ;;
  pps)
    s=${2:-6}
    dmac=$(ip netns exec $B cat /sys/class/net/eth0/address); smac=$(ip netns exec $A cat /sys/class/net/eth0/address)
    printf '{ eth(da=%s, sa=%s), ipv4(saddr=198.18.0.1, daddr=198.18.0.2, ttl=64, df), udp(sp=9, dp=9), fill(0, 18) }\n' "$dmac" "$smac" > $D/tg.cfg
    timeout -s INT "$s" ip netns exec $A trafgen -i $D/tg.cfg -o eth0 -P 1 --no-sock-mem -Q -C >/dev/null 2>&1 &
    sleep 1; a0=$(ip netns exec $A cat /sys/class/net/eth0/statistics/tx_packets); b0=$(ip netns exec $B cat /sys/class/net/eth0/statistics/rx_packets)
    sleep $((s - 2)); a1=$(ip netns exec $A cat /sys/class/net/eth0/statistics/tx_packets); b1=$(ip netns exec $B cat /sys/class/net/eth0/statistics/rx_packets)
    wait || true
    echo "offered $(( (a1 - a0) / (s - 2) / 1000 )) kpps  forwarded $(( (b1 - b0) / (s - 2) / 1000 )) kpps" ;;
  threads)   # per-thread CPU of both daemons and the clients over 3 s while CMD runs
    shift; "$0" "$@" & c=$!; sleep 2
    top -H -b -d 3 -n 2 -p "$(cat $D/pid1),$(cat $D/pid2)" | awk '/^top/{n++} n==2' | grep -E "vsw|PID" | head -12
    ps -eLo psr,pcpu,comm | grep -E "trafgen|iperf3|sockperf" | head; wait $c ;;
  rr)
    s=${2:-5}
    ip netns exec $B sockperf server -i 198.18.0.2 >/dev/null 2>&1 & sp=$!
    sleep 0.5
    ip netns exec $A sockperf ping-pong -i 198.18.0.2 -m 64 -t "$s" --full-rtt 2>&1 | grep -E "percentile (50|99)\.000" || true
    kill $sp ;;
  perf)
    shift; perf record -F 2999 -a -g -o $D/perf.data -- sleep 100000 >/dev/null 2>&1 & pp=$!
    sleep 0.5; "$0" "$@"; kill -INT $pp; wait $pp 2>/dev/null || true
    perf report -i $D/perf.data --no-children --sort comm,dso,sym --percent-limit 0.8 --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -60 ;;
  *) sed -n 2,10p "$0"; exit 2 ;;
esac
