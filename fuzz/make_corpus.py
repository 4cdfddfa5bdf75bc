#!/usr/bin/env python3
"""(Re)write the committed seed corpus: fuzz/corpus/TARGET/seed-<sha1> for every seed a target
makes with our own encoders. Deterministic (fixed keys), so re-running changes nothing."""

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fuzz import targets  # noqa: E402


def main() -> None:
    for name in targets.NAMES:
        d = HERE / "corpus" / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for data in targets.load(name).seeds():
            (d / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        print(f"{name}: {len(list(d.glob('seed-*')))} seeds")


if __name__ == "__main__":
    main()
