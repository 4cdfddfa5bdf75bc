#!/usr/bin/env bash
# Create bench/.venv-pylibp2p with py-libp2p 0.8.1 (the peer the benchmarks compare against).
# Its own venv because py-libp2p pulls trio, its own multiaddr package and more, none of which
# p2prtc wants. Idempotent: does nothing when the venv already has libp2p 0.8.1.
# The last line of stdout is the venv's python.
#
#   bench/setup-pylibp2p.sh            FORCE=1 bench/setup-pylibp2p.sh (recreate)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-pylibp2p"
version="0.8.1"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

if [[ "${FORCE:-}" != "" ]]; then rm -rf "$venv"; fi
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('libp2p') != '$version')" 2>/dev/null; then
    echo "setup-pylibp2p.sh: libp2p $version already installed" >&2
else
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet "libp2p==$version" >&2
fi
"$venv/bin/python" -c "import libp2p, trio" >&2
echo "$venv/bin/python"
