"""Shared by the benchmark scripts."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(results: dict, out: str | Path) -> None:
    """Write the benchmark's JSON (the numbers docs/benchmarks.md quotes)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
