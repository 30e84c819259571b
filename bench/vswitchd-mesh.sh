#!/usr/bin/env bash
# vswitchd on two hosts (../shared/bench dual topology): one vswitchd per host namespace,
# joined into an encrypted mesh (password mode, host 2 names host 1), an encrypted
# overlay network between them, the client veth ends attached with `port add`.
# Compare with the tinc-switch and boringtun targets.
# Knobs: VSWITCHD_WORKERS, VSWITCHD_BIN_DIR.
set -euo pipefail
. "$BENCH_DIR/lib/common.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VSWITCHD_BIN_DIR:-$HERE/../target/release}
D=${BENCH_RUN_DIR:-/tmp}/vswitchd
CTL() { "$BIN/vswitchctl" --socket "$D/$1.sock" "${@:2}"; }

case "${1:-}" in
  describe)
    echo "TOPO=dual"; echo "L3=0"
    echo "CLIENT_MTU=1404"
    echo "DESC=vswitchd on two hosts, encrypted mesh (Noise IKpsk1, ChaCha20-Poly1305), ${VSWITCHD_WORKERS:-$(nproc)} workers each" ;;
  up)
    [ -x "$BIN/vswitchd" ] || { echo "build first: cargo build --release" >&2; exit 1; }
    mkdir -p "$D"
    for h in 1 2; do
      ns=$BENCH_H1_NS; me=$BENCH_H1_UL_IP; peer=$BENCH_H2_UL_IP; port=$BENCH_A_PORT
      [ $h = 2 ] && { ns=$BENCH_H2_NS; me=$BENCH_H2_UL_IP; peer=$BENCH_H1_UL_IP; port=$BENCH_B_PORT; }
      args=(--state-dir "$D/state$h" --socket "$D/h$h.sock" --netns "$ns" --advertise "$me" --mesh-password bench-secret)
      [ $h = 2 ] && args+=(--mesh-peer "$peer")
      [ -n "${VSWITCHD_WORKERS:-}" ] && args+=(--workers "$VSWITCHD_WORKERS")
      "$BIN/vswitchd" "${args[@]}" >"$D/vswitchd$h.log" 2>&1 &
      echo $! >> "$BENCH_RUN_DIR/pids"
      for _ in $(seq 100); do CTL h$h ping >/dev/null 2>&1 && break; sleep 0.1; done
      CTL h$h ping >/dev/null || { cat "$D/vswitchd$h.log" >&2; exit 1; }
      CTL h$h network create bench --driver overlay --encrypted --vni 42 --subnet 198.18.0.0/24 --gateway 198.18.0.254 >/dev/null
      CTL h$h port add bench "$port" >/dev/null
    done
    # Ready when each host has a session with the other.
    for _ in $(seq 100); do
      CTL h1 mesh peers --format json 2>/dev/null | grep -q '"session_up": true' && CTL h2 mesh peers --format json 2>/dev/null | grep -q '"session_up": true' && break
      sleep 0.1
    done ;;
  down)
    for h in 1 2; do [ -S "$D/h$h.sock" ] && CTL h$h stats > "$D/stats$h.txt" 2>&1 || true; done
    kill_pidfile_list "${BENCH_RUN_DIR:-/nonexistent}/pids" ;;
  *) echo "usage: $0 describe|up|down" >&2; exit 2 ;;
esac
