#!/usr/bin/env bash
# Build Let's Encrypt's ACME test server (pebble) and its DNS stub (pebble-challtestsrv) from the
# Go module proxy into ~/.cache/p2prtc/bin (or $P2PRTC_PEBBLE_BIN): the local ACME CA of
# tests/pebble.py. Skipped when both are there at the pinned version.
set -euo pipefail
VERSION=v2.8.0
bin="${P2PRTC_PEBBLE_BIN:-$HOME/.cache/p2prtc/bin}"
mkdir -p "$bin"
if [[ -x "$bin/pebble" && -x "$bin/pebble-challtestsrv" \
      && "$(cat "$bin/.pebble-version" 2>/dev/null || true)" == "$VERSION" ]]; then
  exit 0
fi
command -v go >/dev/null || { echo "build-pebble: go not found (needed to build pebble)" >&2; exit 1; }
GOBIN="$bin" GOFLAGS=-mod=mod go install \
  "github.com/letsencrypt/pebble/v2/cmd/pebble@$VERSION" \
  "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$VERSION"
echo "$VERSION" > "$bin/.pebble-version"
