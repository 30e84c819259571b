#!/usr/bin/env bash
# vswitchd as a target of ../shared/bench (see its README for the contract).
#
# Variants (by the name this script is called under, or VSWITCHD_MODE):
#   vswitchd.sh            clients on veths; va/vb attached with `port add` (AF_PACKET,
#                          virtio-net headers: GSO frames and partial checksums pass)
#   vswitchd-tap.sh        clients on TAPs created by vswitchd (`port add --type tap`),
#                          moved into the clients as eth0 (like the vde target)
#   vswitchd-nooffload.sh  clients on veths with `tx off` and vswitchd --no-offload:
#                          every frame a plain MTU-sized frame (compare with ovs-netdev)
# Knobs: VSWITCHD_WORKERS (default: one per CPU), VSWITCHD_ARGS (extra daemon flags),
#        VSWITCHD_BIN_DIR (default: the project's target/release).
set -euo pipefail
. "$BENCH_DIR/lib/common.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VSWITCHD_BIN_DIR:-$HERE/../target/release}
case "$(basename "$0")" in
  vswitchd-tap.sh) MODE=${VSWITCHD_MODE:-tap} ;;
  vswitchd-nooffload.sh) MODE=${VSWITCHD_MODE:-nooffload} ;;
  *) MODE=${VSWITCHD_MODE:-veth} ;;
esac
D=${BENCH_RUN_DIR:-/tmp}/vswitchd
CTL() { "$BIN/vswitchctl" --socket "$D/sock" "$@"; }

case "${1:-}" in
  describe)
    echo "TOPO=single"; echo "L3=0"; echo "CLIENT_MTU=1500"
    w=${VSWITCHD_WORKERS:-$(nproc)}
    case "$MODE" in
      tap) echo "ATTACH=tap"; echo "DESC=vswitchd $w workers, clients on vswitchd TAPs (vnet hdr, multi-queue)" ;;
      nooffload) echo "CLIENT_ETHTOOL=tx off"; echo "DESC=vswitchd $w workers, veth ports without offloads (clients tx off)" ;;
      *) echo "DESC=vswitchd $w workers, veth ports via AF_PACKET + vnet hdr" ;;
    esac ;;
  up)
    [ -x "$BIN/vswitchd" ] || { echo "build first: cargo build --release ($BIN/vswitchd missing)" >&2; exit 1; }
    mkdir -p "$D"
    args=(--state-dir "$D/state" --socket "$D/sock" --netns "$BENCH_SW_NS")
    [ -n "${VSWITCHD_WORKERS:-}" ] && args+=(--workers "$VSWITCHD_WORKERS")
    [ "$MODE" = nooffload ] && args+=(--no-offload)
    # shellcheck disable=SC2206
    args+=(${VSWITCHD_ARGS:-})
    "$BIN/vswitchd" "${args[@]}" >"$D/vswitchd.log" 2>&1 &
    echo $! >> "$BENCH_RUN_DIR/pids"
    for _ in $(seq 100); do CTL ping >/dev/null 2>&1 && break; sleep 0.1; done
    CTL ping >/dev/null || { cat "$D/vswitchd.log" >&2; exit 1; }
    CTL network create bench --subnet 198.18.0.0/24 --gateway 198.18.0.254 >/dev/null
    if [ "$MODE" = tap ]; then
      CTL port add bench vsa --type tap >/dev/null
      CTL port add bench vsb --type tap >/dev/null
      ip -n "$BENCH_SW_NS" link set vsa netns "$BENCH_A_NS"
      ip -n "$BENCH_SW_NS" link set vsb netns "$BENCH_B_NS"
      ip -n "$BENCH_A_NS" link set vsa name "$BENCH_A_IF"
      ip -n "$BENCH_B_NS" link set vsb name "$BENCH_B_IF"
    else
      CTL port add bench "$BENCH_A_PORT" >/dev/null
      CTL port add bench "$BENCH_B_PORT" >/dev/null
    fi ;;
  down)
    if [ -S "$D/sock" ]; then CTL stats > "$D/stats.txt" 2>&1 || true; fi
    kill_pidfile_list "${BENCH_RUN_DIR:-/nonexistent}/pids" ;;
  *) echo "usage: $0 describe|up|down" >&2; exit 2 ;;
esac
