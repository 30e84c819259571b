#!/bin/bash
# Kernel memory a daemon costs per sandbox (receive rings are the bulk of it): starts
# vswitchd in namespace vdev-mem, creates and connects N sandboxes (vdev-m1..N),
# prints the drop of MemAvailable and the daemon RSS, removes everything.
#   bench/dev/mem.sh N [vswitchd args…]   (e.g. --rx-ring-slot 2048, --rx-ring 0)
set -u
B=${VSWITCHD_BIN_DIR:-$(cd "$(dirname "$0")" && pwd)/../../target/release}
N=${1:?N}; shift
D=/tmp/vdev-mem; mkdir -p $D; ip netns add vdev-mem
CTL() { $B/vswitchctl --socket $D/sock "$@"; }
m0=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
$B/vswitchd --netns vdev-mem --state-dir $D/state --socket $D/sock "$@" > $D/log 2>&1 & echo $! > $D/pid
for _ in $(seq 50); do CTL ping >/dev/null 2>&1 && break; sleep 0.1; done
CTL network create mem --subnet 10.77.0.0/16 >/dev/null
for i in $(seq $N); do CTL sandbox create vdev-m$i >/dev/null; CTL connect mem vdev-m$i >/dev/null; done
sleep 1
m1=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
echo "sandboxes $N: MemAvailable dropped $(( (m0 - m1) / 1024 )) MiB; daemon RSS $(awk '/VmRSS/{print $2}' /proc/$(cat $D/pid)/status) kB"
for i in $(seq $N); do CTL sandbox rm vdev-m$i >/dev/null 2>&1; done
kill $(cat $D/pid); wait 2>/dev/null; ip netns del vdev-mem; rm -rf $D
ip netns list | grep vdev-m || true
