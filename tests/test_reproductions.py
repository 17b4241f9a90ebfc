"""The reproduction docs hold exactly the tables their committed summaries give."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = {"jiang2024": ROOT / "scripts" / "reproduce_jiang2024.py"}


def _script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(DOCS))
def test_doc_tables_are_the_committed_summary(name: str) -> None:
    script = _script(DOCS[name])
    summary = json.loads((ROOT / "docs/reproductions/data" / name / "summary.json").read_text())
    assert not summary["tiny"], "the committed summary must be the full run's"
    doc = (ROOT / "docs/reproductions" / f"{name}.md").read_text()
    region = doc.split(script.BEGIN, 1)[1].split(script.END, 1)[0]
    assert region.strip() == script.render_tables(summary).strip(), (
        f"docs/reproductions/{name}.md's tables differ from its summary.json: rerun "
        f"`python {DOCS[name].relative_to(ROOT)} --out docs/reproductions/data/{name} --doc "
        f"docs/reproductions/{name}.md`"
    )
