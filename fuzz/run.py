#!/usr/bin/env python3
"""Run the coverage-guided fuzz targets (atheris / libFuzzer).

    fuzz/run.py TARGET|all [--seconds N | --runs N] [--jobs-dir DIR] [-- libFuzzer args]
    fuzz/run.py TARGET --replay FILE...     run inputs once, without atheris (crash triage)
    fuzz/run.py --list

Each target reads its committed seed corpus (fuzz/corpus/TARGET/) and writes what it learns
to a scratch corpus (fuzz/.work/corpus/TARGET/ by default, never the committed one: that stays
small and is regenerated with fuzz/make_corpus.py). A crash leaves its input in
fuzz/.work/crashes/TARGET/ and the run exits non-zero; feed it to --replay to see the
traceback, then turn it into a fix plus a regression test in tests/unit/.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from fuzz import targets  # noqa: E402  (imports no p2prtc module by itself)

# Per-input limits: a decoder that takes longer than this on one input, or a process that grows
# past this, is a crash (a hang or unbounded memory).
INPUT_TIMEOUT_S = 10
RSS_LIMIT_MB = 1536
MAX_LEN = 8192


def _child(name: str, libfuzzer_args: list[str]) -> None:
    """In the fuzzing process: instrument p2prtc, load the target, hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["p2prtc", "fuzz"]):
        module = targets.load(name)
    atheris.Setup([sys.argv[0], *libfuzzer_args], module.test_one)
    atheris.Fuzz()


def run_target(name: str, seconds: float | None, runs: int | None, work: Path,
               extra: list[str], quiet: bool = False) -> tuple[int, int, str]:
    """Fuzz one target in a subprocess; return (exit code, executions, tail of its log)."""
    scratch = work / "corpus" / name
    crashes = work / "crashes" / name
    scratch.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / name
    args = [f"-timeout={INPUT_TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-max_len={MAX_LEN}", f"-artifact_prefix={crashes}/", "-print_final_stats=1"]
    if seconds is not None:
        args.append(f"-max_total_time={max(1, int(seconds))}")
    if runs is not None:
        args.append(f"-runs={runs}")
    args += extra
    args += [str(scratch), str(seeds)]
    cmd = [sys.executable, str(HERE / "run.py"), "--child", name, "--", *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")
    log = proc.stdout
    m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    if not m:
        m = re.findall(r"Done (\d+) runs", log)
    execs = int(m[-1]) if m else 0
    if not quiet:
        (work / f"{name}.log").write_text(log)
    return proc.returncode, execs, log[-4000:]


def replay(name: str, files: list[str]) -> int:
    module = targets.load(name)
    failed = 0
    for f in files:
        data = Path(f).read_bytes()
        try:
            module.test_one(data)
            print(f"{f}: ok")
        except BaseException:
            import traceback
            failed += 1
            print(f"{f}: CRASH")
            traceback.print_exc()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        name = argv[1]
        rest = argv[3:] if argv[2:3] == ["--"] else argv[2:]
        _child(name, rest)
        return 0
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", nargs="?", help="a target name or 'all'")
    p.add_argument("--seconds", type=float, help="fuzz each target this long")
    p.add_argument("--runs", type=int, help="or: this many executions per target")
    p.add_argument("--work", default=str(HERE / ".work"), help="scratch corpus and crashes")
    p.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once")
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    if a.list or not a.target:
        print("\n".join(targets.NAMES))
        return 0 if a.list else 2
    if a.replay:
        return replay(a.target, a.replay)
    names = targets.NAMES if a.target == "all" else [a.target]
    if a.seconds is None and a.runs is None:
        a.seconds = 10
    work = Path(a.work)
    worst = 0
    print(f"{'target':18} {'result':8} {'execs':>10} {'seconds':>8}")
    for name in names:
        t0 = time.monotonic()
        rc, execs, tail = run_target(name, a.seconds, a.runs, work, extra)
        took = time.monotonic() - t0
        print(f"{name:18} {'ok' if rc == 0 else 'CRASH':8} {execs:>10} {took:>8.1f}", flush=True)
        if rc != 0:
            worst = 1
            print(tail, file=sys.stderr)
    return worst


if __name__ == "__main__":
    sys.exit(main())
