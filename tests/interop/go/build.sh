#!/usr/bin/env bash
# Build the go-libp2p interop peer (main.go) from the Go module proxy into
# ~/.cache/p2prtc/bin/gopeer (or $P2PRTC_GOPEER), with the module versions of go.mod/go.sum.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${P2PRTC_GOPEER:-$HOME/.cache/p2prtc/bin/gopeer}"
mkdir -p "$(dirname "$out")"
command -v go >/dev/null || { echo "gopeer build: go not found" >&2; exit 1; }
work="$HOME/.cache/p2prtc/gopeer-src"
mkdir -p "$work"
cp "$here/main.go" "$here/go.mod" "$here/go.sum" "$work/"
stamp="$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -d' ' -f1)"
if [[ -x "$out" && "$(cat "$out.stamp" 2>/dev/null || true)" == "$stamp" ]]; then exit 0; fi
cd "$work"
GOFLAGS=-mod=readonly go build -o "$out" . >&2
echo "$stamp" > "$out.stamp"
