"""`python -m bench`: run every benchmark module of this package, one after the other."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main() -> int:
    status = 0
    for module_info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        if hasattr(module, "main"):
            print(f"== bench.{module_info.name}", flush=True)
            status |= module.main([]) or 0
    return status


if __name__ == "__main__":
    sys.exit(main())
