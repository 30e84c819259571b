#!/usr/bin/env bash
# Installs, builds and runs vswitchd with a small demo topology on the embedded
# default state (/var/lib/vswitchd): network "demo" (10.200.0.0/24) with sandboxes
# demo-c1 (veth) and demo-c2 (TAP).
#
# By default the daemon runs inside its own network namespace "vswitchd-demo", so the
# demo changes nothing on the host's own network; VSWITCHD_NETNS= (empty) runs it in
# the current namespace instead. `scripts/demo.sh stop` stops it and removes the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${VSWITCHD_NETNS-vswitchd-demo}
SOCK=/run/vswitchd/vswitchd.sock
if [ "${1:-}" = stop ]; then
  if [ -f /run/vswitchd/demo.pid ]; then
    for sb in demo-c1 demo-c2; do vswitchctl sandbox rm "$sb" >/dev/null 2>&1 || true; done
    vswitchctl network rm demo >/dev/null 2>&1 || true
    kill "$(cat /run/vswitchd/demo.pid)" 2>/dev/null || true
    rm -f /run/vswitchd/demo.pid
  fi
  [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null || true
  echo "demo stopped"; exit 0
fi
./scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins
install -m 0755 target/release/vswitchd target/release/vswitchctl /usr/local/bin/
mkdir -p /run/vswitchd
if ! vswitchctl ping >/dev/null 2>&1; then
  args=()
  if [ -n "$NS" ]; then
    ip netns list | grep -qw "$NS" || { ip netns add "$NS"; ip -n "$NS" link set lo up; }
    args=(--netns "$NS")
  fi
  nohup vswitchd "${args[@]}" >>/var/log/vswitchd.log 2>&1 &
  echo $! > /run/vswitchd/demo.pid
  for _ in $(seq 100); do vswitchctl ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
vswitchctl ping
vswitchctl network inspect demo >/dev/null 2>&1 || vswitchctl network create demo --subnet 10.200.0.0/24 >/dev/null
for sb in demo-c1 demo-c2; do vswitchctl sandbox ls --format json | grep -q "\"$sb\"" || vswitchctl sandbox create "$sb" >/dev/null; done
vswitchctl network inspect demo | grep -q '"demo-c1"' || vswitchctl connect demo demo-c1
vswitchctl network inspect demo | grep -q '"demo-c2"' || vswitchctl connect demo demo-c2 --port-kind tap
echo; echo "== ping demo-c1 -> demo-c2 and the gateway"
ip netns exec demo-c1 ping -c 3 -i 0.2 10.200.0.3
ip netns exec demo-c1 ping -c 1 10.200.0.1 | tail -2
echo; vswitchctl network ls; echo; vswitchctl fdb show demo; echo; vswitchctl stats
echo
echo "vswitchd is running (log: /var/log/vswitchd.log). Try: ip netns exec demo-c1 ping 10.200.0.3"
echo "Stop the demo with: scripts/demo.sh stop"
