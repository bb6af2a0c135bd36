#!/usr/bin/env bash
# Install what the agent, its tests and its demo need on a fresh Debian machine (as root), then
# the Python dependencies into .venv. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(haproxy keepalived iproute2 nftables ipvsadm util-linux netcat-openbsd python3-venv time)
# the amphora image build (make image) and the VM tests: qemu, config drives, DHCP for the VM
packages+=(mmdebstrap qemu-system-x86 qemu-utils genisoimage dnsmasq-base syslinux syslinux-common mtools
  dosfstools fdisk e2fsprogs)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# A packaged haproxy or keepalived service must not hold ports or VIPs the tests use.
for svc in haproxy keepalived; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
