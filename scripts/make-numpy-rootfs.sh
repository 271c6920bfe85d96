#!/usr/bin/env bash
# Builds the demo rootfs (make-demo-rootfs.sh) plus numpy from PyPI (the manylinux wheel
# for python 3.11, ~60 MB installed) and the C++ runtime it loads: the python+numpy stand-in
# of the formats issue's benchmarks (docs/benchmarks.md). Needs pip and PyPI.
set -euo pipefail
dst=${1:?usage: make-numpy-rootfs.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/make-demo-rootfs.sh" "$dst" >/dev/null
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download -q numpy==2.2.6 --only-binary=:all: --python-version 3.11 \
  --platform manylinux2014_x86_64 -d "$wheels"
python3 -m pip install -q --no-deps --no-index \
  --target "$dst/usr/local/lib/python3.11/dist-packages" "$wheels"/numpy-*.whl
for l in libstdc++.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1; do
  cp -L "/usr/lib/x86_64-linux-gnu/$l" "$dst/lib/x86_64-linux-gnu/"
done
du -sh "$dst"
