#!/usr/bin/env bash
# Installs, idempotently, what skiff's build, tests and demo need on a fresh Debian machine.
set -euo pipefail
pkgs=(docker-registry busybox-static fuse3 zstd crun skopeo iptables iproute2 hyperfine sqlite3 debootstrap bc)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian package ships a registry service config; our tests start their own registries.
[ -e /dev/fuse ] || { echo "error: /dev/fuse is missing; skiff needs FUSE" >&2; exit 1; }
