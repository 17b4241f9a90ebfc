"""Offline HTML: circuitsvis views inlined, reports self-contained."""

from __future__ import annotations

from pathlib import Path

from mechlin.viz import attention_pattern_html, write_report


def test_attention_html_is_self_contained(tiny: object, tmp_path: Path) -> None:
    page = attention_pattern_html(tiny, "The Eiffel Tower is in Paris", 1, heads=[0, 2])
    assert "unpkg.com" not in page and "import {" not in page  # nothing fetched from a CDN
    assert "CircuitsVis.render" in page and len(page) > 500_000  # the bundle is inlined
    path = write_report(tmp_path / "r.html", "t", [("pattern", page)])
    assert path.read_text().startswith("<!DOCTYPE html>")
