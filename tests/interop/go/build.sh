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
if [[ ! -x "$out" || "$(cat "$out.stamp" 2>/dev/null || true)" != "$stamp" ]]; then
  (cd "$work" && GOFLAGS=-mod=readonly go build -o "$out" . >&2)
  echo "$stamp" > "$out.stamp"
fi

# The go-libp2p-kad-dht node (kad/main.go, its own module: go-libp2p-kad-dht v0.42.2) into
# ~/.cache/p2prtc/bin/gokad (or $P2PRTC_GOKAD).
kout="${P2PRTC_GOKAD:-$HOME/.cache/p2prtc/bin/gokad}"
kwork="$HOME/.cache/p2prtc/gokad-src"
mkdir -p "$kwork" "$(dirname "$kout")"
cp "$here/kad/main.go" "$here/kad/go.mod" "$here/kad/go.sum" "$kwork/"
kstamp="$(cat "$here/kad/main.go" "$here/kad/go.mod" "$here/kad/go.sum" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$kout" || "$(cat "$kout.stamp" 2>/dev/null || true)" != "$kstamp" ]]; then
  (cd "$kwork" && GOFLAGS=-mod=readonly go build -o "$kout" . >&2)
  echo "$kstamp" > "$kout.stamp"
fi

# The go-libp2p AutoNAT v2 peer (autonat/main.go, its own module) into
# ~/.cache/p2prtc/bin/autonatpeer (or $P2PRTC_AUTONATPEER).
"$here/autonat/build.sh"
