"""NAT lab fixtures: tests marked `lab` need root and network namespaces.

Locally without them they are skipped with the reason; in CI (CI=true, run as root) a missing
capability is a failure, never a silent skip. After every lab test no namespace of this process
may be left: the lab must clean up also when a test fails.
"""

from __future__ import annotations

import os

import pytest

from p2prtc.lab.netns import list_lab_namespaces, owner_pid, unsupported_reason


@pytest.fixture(scope="session")
def lab_supported() -> None:
    reason = unsupported_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the NAT lab cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def own_namespaces() -> list[str]:
    return [n for n in list_lab_namespaces() if owner_pid(n) == os.getpid()]


@pytest.fixture
def lab(lab_supported):
    """Use in every lab test: checks that nothing of ours is left afterwards."""
    assert own_namespaces() == []
    yield
    left = own_namespaces()
    assert left == [], f"lab namespaces left behind: {left}"
