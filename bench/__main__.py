"""`python -m bench` (`make bench`): run every benchmark module of this package."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main() -> int:
    failed = 0
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        runner = getattr(module, "main", None)
        if runner is None:
            continue
        print(f"== bench/{info.name}.py", flush=True)
        failed |= bool(runner([]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
