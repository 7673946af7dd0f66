"""Run every benchmark in this folder, one after the other: python -m bench.run [name ...]."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

SKIP = {"common", "run"}


def main(argv: list[str]) -> None:
    folder = Path(__file__).parent
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name not in SKIP)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "main"):
            print(f"\n## bench.{name}\n", flush=True)
            module.main()


if __name__ == "__main__":
    main(sys.argv[1:])
