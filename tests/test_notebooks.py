"""The notebooks: each ``.ipynb`` is its paired jupytext ``.py`` (one source), committed without
outputs, and every notebook executes without error at its small size.

An executed notebook is exported to HTML under the artifacts folder (``$MECHLIN_ARTIFACTS``,
default ``tests/artifacts``) for the browser tests.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
ARTIFACTS = Path(os.environ.get("MECHLIN_ARTIFACTS", ROOT / "tests" / "artifacts"))


def _cells(nb: object) -> list[tuple[str, str, list[str]]]:
    return [
        (c.cell_type, c.source, sorted(c.metadata.get("tags", [])))
        for c in nb.cells  # type: ignore[attr-defined]
    ]


def test_there_is_a_notebook_per_area() -> None:
    names = {p.stem.split("_", 1)[1] for p in NOTEBOOKS}
    assert {
        "getting_started",
        "causal_tracing",
        "dissecting_recall",
        "sparse_probing",
        "concept_directions",
        "superposition",
        "origins",
        "cognition",
    } <= names


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_in_sync_with_its_script_and_has_no_outputs(source: Path) -> None:
    import jupytext  # dev dependencies (pyproject's [dev]): a missing one fails, never skips
    import nbformat

    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"run: jupytext --to ipynb {source.relative_to(ROOT)}"
    committed = nbformat.read(paired, as_version=4)
    assert _cells(jupytext.read(source)) == _cells(committed), (
        f"{paired.name} differs from {source.name}: edit the .py, then run "
        f"`jupytext --to ipynb {source.relative_to(ROOT)}`"
    )
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{paired.name} has outputs"
    tags = [c.metadata.get("tags", []) for c in committed.cells]
    assert sum("parameters" in t for t in tags) == 1, "one papermill-style parameters cell"


def execute_notebook(source: Path, *, size: str = "small", html_out: Path | None = None) -> object:
    """Run a notebook (from its paired ``.ipynb``) in a fresh kernel at ``size``; return it."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    old = os.environ.get("MECHLIN_NOTEBOOK_SIZE")
    os.environ["MECHLIN_NOTEBOOK_SIZE"] = size  # the kernel inherits the environment
    try:
        NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        ).execute()
    finally:
        if old is None:
            os.environ.pop("MECHLIN_NOTEBOOK_SIZE", None)
        else:
            os.environ["MECHLIN_NOTEBOOK_SIZE"] = old
    if html_out is not None:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
        # The template loads MathJax and require.js from a CDN; these notebooks need neither
        # (circuitsvis views carry their script inline), and the page must open offline.
        body = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", body)
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(body, encoding="utf-8")
    return nb


@pytest.mark.bundled
@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_at_small_size(source: Path) -> None:

    html_out = ARTIFACTS / "notebooks" / f"{source.stem}.html"
    nb = execute_notebook(source, html_out=html_out)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]  # type: ignore[attr-defined]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
    assert any("text/html" in o.data or "image/png" in o.data for o in shown), (
        f"{source.name} shows no result inline"
    )
    print(f"executed notebook: {html_out}")
