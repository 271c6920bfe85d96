#!/usr/bin/env bash
# Installs, idempotently, what skiff's build, tests and demo need on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# docker-compose 1.29 (Debian) is an acceptance client; --no-install-recommends keeps its
# recommended docker.io (dockerd, which would rewrite iptables) off the machine.
# stargz-snapshotter (ctr-remote) and containerd write the eStargz interop fixture.
# python3-flatbuffers (the reference builder) lays zTOCs out as soci-snapshotter's Go writer.
pkgs=(docker-registry busybox-static fuse3 zstd crun skopeo iptables iproute2 hyperfine sqlite3
  debootstrap bc tini libseccomp-dev pkg-config docker-compose python3-venv procps
  containerd protobuf-compiler stargz-snapshotter python3-flatbuffers)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Python Docker SDK, pinned, in its own venv: docker-py 7 in the system python would
# break Debian's docker-compose 1.29. Tests find it at $SKIFF_SDK_PYTHON or this path.
venv=/opt/skiff-test-venv
if ! "$venv/bin/python" -c 'import docker' 2>/dev/null \
  || ! cmp -s tests/requirements-sdk.txt "$venv/requirements-sdk.txt"; then
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/requirements-sdk.txt
  cp tests/requirements-sdk.txt "$venv/requirements-sdk.txt"
fi
# The docker CLI 20.10 (Debian's docker.io), a second acceptance client: only its client
# binary, extracted from the package, never installed (the package starts dockerd).
cli2010=/opt/docker-20.10/docker
if [ ! -x "$cli2010" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download -qq docker.io 2>/dev/null \
    || { apt-get update -qq && apt-get download -qq docker.io 2>/dev/null; }; } \
    && dpkg-deb -x docker.io_*.deb x)
  install -D -m 0755 "$tmp/x/usr/bin/docker" "$cli2010"
  rm -rf "$tmp"
fi
[ -e /dev/fuse ] || { echo "error: /dev/fuse is missing; skiff needs FUSE" >&2; exit 1; }
