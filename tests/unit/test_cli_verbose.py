"""`-v`/`-vv` work before or after the command name (`p2prtc -v listen ...` as well as
`p2prtc listen ... -v`), counted together."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2prtc.cli import build_parser, verbosity

SEED0 = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


@pytest.mark.parametrize("argv, level", [
    (["id", "--secret-key-seed", "0"], 0),
    (["-v", "id", "--secret-key-seed", "0"], 1),
    (["id", "--secret-key-seed", "0", "-v"], 1),
    (["-vv", "id", "--secret-key-seed", "0"], 2),
    (["id", "-vv", "--secret-key-seed", "0"], 2),
    (["-v", "id", "--secret-key-seed", "0", "-v"], 2),
    (["--verbose", "dial", "/ip4/127.0.0.1/tcp/1/p2p/" + SEED0], 1),
    (["listen", "/ip4/127.0.0.1/tcp/1/p2p/" + SEED0, "-vv", "--json"], 2),
])
def test_verbosity_before_or_after_the_command(argv, level):
    assert verbosity(build_parser().parse_args(argv)) == level


def test_debug_logs_with_v_before_the_command():
    """The real command line: -vv before the command turns on debug logs on stderr."""
    proc = subprocess.run([sys.executable, "-m", "p2prtc", "-vv", "id", "--secret-key-seed", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == SEED0
    proc = subprocess.run([sys.executable, "-c",
                           "import logging, sys; from p2prtc.cli import main; "
                           "main(sys.argv[1:]); print(logging.getLogger().level)",
                           "-vv", "id", "--secret-key-seed", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [SEED0, str(10)]  # logging.DEBUG
