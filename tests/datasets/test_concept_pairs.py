"""The shipped concept pairs: their content and that the build script writes them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from mechlin.directions.concepts import (
    load_concepts,
)

# Token-id concepts for the tiny models (their 400-token vocabulary has few whole words).
ID_CONCEPTS = {
    "a": [(3, 40), (7, 90), (11, 120), (50, 200), (61, 301)],
    "b": [(5, 6), (8, 9), (100, 101), (250, 251)],
    "c": [(20, 399), (31, 222)],
}


def test_shipped_concepts() -> None:
    concepts = load_concepts()
    assert len(concepts) >= 12
    for c in concepts.values():
        assert c.source and c.category and len(c.pairs) >= 7, c.name
        assert all(len(p) == 2 and p[0] != p[1] for p in c.pairs), c.name
    assert "thing -> part" in concepts and ("car", "wheel") in concepts["thing -> part"].pairs
    assert ("France", "Paris") in concepts["country -> capital"].pairs
    assert "countries.json" in concepts["country -> capital"].source
    big = [n for n, c in concepts.items() if len(c.pairs) >= 30]
    assert len(big) >= 20


def test_shipped_json_is_what_the_build_script_writes() -> None:
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("build", root / "scripts/build_concept_pairs.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    shipped = json.loads((root / "mechlin/datasets/data/concepts.json").read_text("utf-8"))
    assert shipped == {"concepts": build.build()}
