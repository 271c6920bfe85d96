#!/usr/bin/env bash
# skiff's test command: style gates, then every test (unit, FUSE, namespaces, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests drive the real `skiff` binary: build it first (cargo test builds a
# package's binaries only for that package's own integration tests).
cargo build --workspace --bins
# Skips are failures here: CI has root, FUSE and the registry, so every test must run.
SKIFF_TEST_STRICT=1 cargo test --workspace --no-fail-fast -- --test-threads=2
