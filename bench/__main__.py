"""`make bench` / `python -m bench [NAME...]`: run every benchmark (or the named ones)
and print their figures."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import time

import bench
from bench.common import PYTHON, ROOT

# Modules that are plumbing, not benchmarks.
HELPERS = {"common", "load", "echo_server"}


def benchmarks() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name not in HELPERS and not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names = argv or benchmarks()
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        # The docstring's first sentence, however many lines it takes.
        title = " ".join((module.__doc__ or name).strip().split("\n\n")[0].split())
        title = title.split(". ")[0].rstrip(".")
        print(f"\n== bench.{name}: {title}", flush=True)
        began = time.perf_counter()
        code = subprocess.call([PYTHON, "-m", f"bench.{name}"], cwd=ROOT)
        print(f"   ({time.perf_counter() - began:.0f}s, exit {code})", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
