#!/usr/bin/env bash
# Build the go-libp2p AutoNAT v2 peer (main.go here, its own module with the go-libp2p version of
# ../go.mod) into ~/.cache/p2prtc/bin/autonatpeer (or $P2PRTC_AUTONATPEER). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${P2PRTC_AUTONATPEER:-$HOME/.cache/p2prtc/bin/autonatpeer}"
command -v go >/dev/null || { echo "autonatpeer build: go not found" >&2; exit 1; }
work="$HOME/.cache/p2prtc/autonatpeer-src"
mkdir -p "$work" "$(dirname "$out")"
cp "$here/main.go" "$here/go.mod" "$here/go.sum" "$work/"
stamp="$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -d' ' -f1)"
if [[ -x "$out" && "$(cat "$out.stamp" 2>/dev/null || true)" == "$stamp" ]]; then exit 0; fi
(cd "$work" && GOFLAGS=-mod=readonly go build -o "$out" . >&2)
echo "$stamp" > "$out.stamp"
