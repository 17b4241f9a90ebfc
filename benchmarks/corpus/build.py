"""Assemble the unseen corpus: mechlin's own English prose, written in 2026.

Both bundled models were trained before any of it existed (SmolLM2: released November 2024;
Gemma 3: March 2025), so they cannot have seen it - Huang et al. 2024's rule for measuring
compression ("texts newer than the models"). The corpus is the README, every page of docs/ and
every module docstring of the package, in a fixed order, as UTF-8 with the file names as
headings. It is frozen in ``mechlin-2026.txt`` (the benchmark reads that file, so its figures
stay comparable while the docs change); rerun this script only to make a new, named snapshot.

    python benchmarks/corpus/build.py benchmarks/corpus/mechlin-2026.txt
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def corpus() -> str:
    parts = [("README.md", (ROOT / "README.md").read_text(encoding="utf-8"))]
    parts += [
        (str(p.relative_to(ROOT)), p.read_text(encoding="utf-8"))
        for p in sorted((ROOT / "docs").glob("*.md"))
    ]
    for p in sorted((ROOT / "mechlin").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
        if doc:
            parts.append((str(p.relative_to(ROOT)), doc))
    return "".join(f"\n\n===== {name} =====\n\n{text.strip()}\n" for name, text in parts)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.write_text(corpus(), encoding="utf-8")
    print(f"{out}: {out.stat().st_size:,} bytes")
