"""Network namespaces for the lab: create, wire, run commands in, and always delete.

Every namespace is named `p2plab-<pid>-<role>`, pid being the process that owns the lab. The
namespace directory (/run/netns) is shared by every network namespace on the machine (scripts/
netns-run only unshares the network), so two labs may run at once: each deletes only its own
namespaces, plus leftovers whose owner process no longer exists (a crashed or killed run).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

PREFIX = "p2plab-"
NETNS_DIR = Path("/run/netns")
# Commands that build the lab return in milliseconds; a hung one is a broken system.
COMMAND_TIMEOUT = 30.0


class LabError(Exception):
    """The lab cannot be built or run; the message is one line a user can act on."""


def sh(*argv: str, input: str | None = None, check: bool = True) -> str:
    """Run a command (no shell) and return its stdout; raise LabError with its stderr."""
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed (apt-get install -y iproute2 nftables)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} hung for {COMMAND_TIMEOUT:.0f} s") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)} failed: {err[0] if err else f'exit {proc.returncode}'}")
    return proc.stdout


def unsupported_reason() -> str | None:
    """Why this machine cannot run the lab (one line), or None when it can."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, veth pairs, nftables): run it with sudo"
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"the NAT lab needs {tool}: apt-get install -y {pkg}"
    name = f"{PREFIX}{os.getpid()}-check"
    try:
        sh("ip", "netns", "add", name)
    except LabError as e:
        return f"cannot create network namespaces here: {e}"
    try:
        sh("ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    except LabError as e:
        return f"cannot create veth pairs in a network namespace: {e}"
    finally:
        sh("ip", "netns", "del", name, check=False)
    return None


def owner_pid(name: str) -> int | None:
    """The pid encoded in a lab namespace name, or None if the name is not ours."""
    if not name.startswith(PREFIX):
        return None
    head = name[len(PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def list_lab_namespaces() -> list[str]:
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []
    return [n for n in names if owner_pid(n) is not None]


def delete_namespace(name: str) -> None:
    """Stop the processes inside a lab namespace (they were started by a lab), then delete it."""
    kill_processes_in(name)
    sh("ip", "netns", "del", name, check=False)


def kill_processes_in(name: str, grace: float = 3.0) -> None:
    out = sh("ip", "netns", "pids", name, check=False)
    pids = [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
    if not pids:
        return
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def remove_leftovers() -> list[str]:
    """Delete lab namespaces whose owner process is gone (a run that crashed or was killed)."""
    removed = []
    for name in list_lab_namespaces():
        pid = owner_pid(name)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            delete_namespace(name)
            removed.append(name)
    return removed


class Namespaces:
    """The namespaces of one lab, created on demand and all deleted by `delete_all()`."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = f"{PREFIX}{os.getpid()}" + (f"-{tag}" if tag else "")
        self.created: list[str] = []

    def name(self, role: str) -> str:
        return f"{self.tag}-{role}"

    def add(self, role: str, *, forward: bool = False) -> str:
        name = self.name(role)
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        # IPv6 off: the lab is IPv4 (documentation ranges) and ICE must not wander onto
        # link-local addresses that exist only because veths came up.
        sh("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
           "net.ipv6.conf.default.disable_ipv6=1", check=False)  # fails if IPv6 is compiled out
        if forward:
            sh("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        return name

    def veth(self, ns1: str, if1: str, ns2: str, if2: str) -> None:
        """A veth pair with end `if1` in ns1 and `if2` in ns2, both up."""
        sh("ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2)
        sh("ip", "-n", ns1, "link", "set", if1, "up")
        sh("ip", "-n", ns2, "link", "set", if2, "up")

    def delete_all(self) -> None:
        for name in reversed(self.created):
            delete_namespace(name)
        self.created.clear()


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """argv that runs `argv` inside namespace `ns`."""
    return ["ip", "netns", "exec", ns, *argv]
