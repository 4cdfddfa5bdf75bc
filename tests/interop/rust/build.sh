#!/usr/bin/env bash
# Build the rust-libp2p interop peer (p2prtc-interop-rust). Idempotent: a no-op rebuild takes
# under a second. Cargo's output goes to stderr; stdout is only the binary's path.
#
#   CARGO_TARGET_DIR      where builds go (default /var/cache/p2prtc/cargo-target, shared by
#                         every clone so a fresh CI checkout rebuilds in seconds)
#   P2PRTC_RUST_PROFILE   debug (default: cold build ~3 min on 2 cores) or release (~7 min)
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null 2>&1; then
    echo "build.sh: cargo not found: install Rust >= 1.88 (e.g. rustup) to build the rust interop peer" >&2
    exit 127
fi

target="${CARGO_TARGET_DIR:-/var/cache/p2prtc/cargo-target}"
if ! mkdir -p "$target" 2>/dev/null || [ ! -w "$target" ]; then
    target="${XDG_CACHE_HOME:-$HOME/.cache}/p2prtc/cargo-target"
    mkdir -p "$target"
fi
export CARGO_TARGET_DIR="$target"

profile="${P2PRTC_RUST_PROFILE:-debug}"
case "$profile" in
    debug) cargo build --locked >&2 ;;
    release) cargo build --locked --release >&2 ;;
    *) echo "build.sh: P2PRTC_RUST_PROFILE must be debug or release, not '$profile'" >&2; exit 2 ;;
esac
echo "$CARGO_TARGET_DIR/$profile/p2prtc-interop-rust"
