#!/bin/sh
# Same-run before/after comparison of two commits (issue 16): one round of the relay, WebRTC,
# seed-relay and TURN benchmarks in quick settings, run from a worktree of each commit with that
# worktree's own src/ on PYTHONPATH (bench scripts of the same commit, the project venv).
#
#   git worktree add --detach /tmp/before <old>; git worktree add --detach /tmp/after <new>
#   for w in before after; do ln -sfn "$PWD/.venv" /tmp/$w/.venv
#     ln -sfn "$PWD/tests/interop/js/node_modules" /tmp/$w/tests/interop/js/node_modules; done
#   for r in 1 2; do bench/before_after.sh /tmp/before out/before$r
#                    bench/before_after.sh /tmp/after out/after$r; done   # alternate: load drifts
#   .venv/bin/python bench/before_after_table.py out
#
# Needs root (scripts/netns-run) and coturn for turn_bench. P2PRTC_RUST_BINARY points at any
# existing rust build so seed_relays_bench does not rebuild it in the worktree (rust is not run).
set -eu
WT=$(cd "$1" && pwd)
OUT=$2
mkdir -p "$OUT"
cd "$WT"
export PYTHONPATH="$WT/src"
export P2PRTC_RUST_BINARY="${P2PRTC_RUST_BINARY:-/var/cache/p2prtc/cargo-target/debug/p2prtc-interop-rust}"
.venv/bin/python -c "import p2prtc, sys; assert p2prtc.__file__.startswith('$WT/src'), p2prtc.__file__"
git -C "$WT" rev-parse --short HEAD > "$OUT/commit"
run() {  # name, command...
    name=$1; shift
    echo "$(date -u +%H:%M:%S) $name" >&2
    "$@" --json "$OUT/$name.json" > "$OUT/$name.md" 2> "$OUT/$name.err" || echo "$name failed: $?" >&2
}
run relay .venv/bin/python bench/relay_bench.py --relays p2prtc \
    --phases reservations,circuits,throughput,memory --reservations 200 --circuits 200 \
    --mb 30 --runs 3 --live 500
run webrtc scripts/netns-run .venv/bin/python bench/webrtc_bench.py --pairs py-py,pyw-pyw \
    --runs 5 --tp-runs 3 --mb 20
run seed scripts/netns-run .venv/bin/python bench/seed_relays_bench.py \
    --relays p2prtc-stun,p2prtc-nostun --conditions default,none --no-browser --runs 3
run turn scripts/netns-run .venv/bin/python bench/turn_bench.py --quick --servers p2prtc,coturn \
    --allocations 300 --cycles 500
echo "$(date -u +%H:%M:%S) done" >&2
