#!/usr/bin/env bash
# skiff's main job on a fresh machine: build, start a local registry and the daemon, publish
# a large image in both formats, and start it cold — lazily (zstd:chunked) and after a full
# pull (gzip) — printing the times and the bytes fetched next to the image size.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
bash scripts/install-deps.sh
cargo build --release -q -p skiff
skiff=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
work=$(mktemp -d /tmp/skiff-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: $reg}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & pids+=($!)

start_daemon() { # $1 = data root
  "$skiff" --exec-root "$work/run" daemon --data-root "$1" >>"$work/daemon.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do [ -S "$work/run/skiff.sock" ] && "$skiff" -H "unix://$work/run/skiff.sock" version >/dev/null 2>&1 && return; sleep 0.1; done
  echo "daemon did not start; log: $work/daemon.log" >&2; exit 1
}
stop_daemon() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
export SKIFF_HOST=unix://$work/run/skiff.sock

echo "== building a large image (busybox + python3 + bulky data)"
bash scripts/make-demo-rootfs.sh "$work/rootfs"
start_daemon "$work/data-publish"
"$skiff" image import --change 'CMD ["python3","-c","print(\"hello\")"]' "$work/rootfs" "$reg/demo:gzip" >/dev/null
"$skiff" push -q "$reg/demo:gzip"
"$skiff" image convert "$reg/demo:gzip" "$reg/demo:chunked"
stop_daemon

now() { date +%s.%N; }
echo; echo "== cold start, lazy (zstd:chunked): pull + run python3 -c \"print('hello')\""
start_daemon "$work/data-lazy"
t0=$(now); "$skiff" pull "$reg/demo:chunked"; "$skiff" run --rm "$reg/demo:chunked"; t1=$(now)
lazy=$(echo "$t1 - $t0" | bc)
"$skiff" info | grep -Ei 'chunk|fetched' || true
stop_daemon

echo; echo "== cold start, full pull (gzip): pull + run"
start_daemon "$work/data-full"
t0=$(now); "$skiff" pull -q "$reg/demo:gzip"; "$skiff" run --rm "$reg/demo:gzip"; t1=$(now)
full=$(echo "$t1 - $t0" | bc)
echo; echo "== warm run (image present, lazily cached)"
t0=$(now); "$skiff" run --rm "$reg/demo:gzip" true; t1=$(now)
warm=$(echo "$t1 - $t0" | bc)
stop_daemon

echo
printf 'cold pull+run lazy (zstd:chunked): %6.3f s\n' "$lazy"
printf 'cold pull+run full (gzip):         %6.3f s   (lazy is %.1fx faster)\n' "$full" "$(echo "$full / $lazy" | bc -l)"
printf 'warm run --rm true:                %6.3f s\n' "$warm"
