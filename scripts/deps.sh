#!/usr/bin/env bash
# Installs what building and testing vswitchd needs on Debian/Ubuntu (as root):
# the Rust toolchain (if cargo is missing) and the tools the end-to-end tests drive.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(iproute2 iputils-ping iputils-tracepath traceroute iperf3 ethtool python3 procps util-linux curl netcat-openbsd dnsutils dnsmasq-base udhcpc tshark tcpdump etcd-server nftables ca-certificates gcc libc6-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# tshark asks whether non-root users may capture: answer no, without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    :
  else
    echo "installing the Rust toolchain (rustup, stable)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
  fi
fi
