"""Every kind of HTML report, opened in headless Chromium (Debian's ``chromium`` through
``chromium-driver``): the page loads with no console error, makes no request outside itself
(every http(s) request is blocked and recorded), every image decodes, and every circuitsvis view
has rendered. A screenshot of each page is written under ``$MECHLIN_ARTIFACTS/screenshots``
(default ``tests/artifacts``).

Where no browser is installed the tests are skipped with the reason - except under ``CI``, where
a missing browser fails them (``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import mechlin
from mechlin import viz
from mechlin.cli import main as cli_main
from mechlin.datasets.features import FeatureDataset, broad_text
from tests.test_notebooks import ARTIFACTS, ROOT, execute_notebook

SHOTS = ARTIFACTS / "screenshots"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")
PAIRS = [
    ("The capital of Italy is", "Italy"),
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("Big Ben is in", "Big Ben"),
]
WORD_PAIRS = [
    ("a", "Paris", "Rome"),
    ("a", "the", "The"),
    ("a", "is", "of"),
    ("b", "city", "capital"),
    ("b", "in", "located"),
    ("b", "Paris", "the"),
]


def _find(names: tuple[str, ...], env: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    return next((p for n in names if (p := shutil.which(n))), None)


def _no_browser(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    pytest.skip(f"browser tests did not run: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
    except ImportError:
        _no_browser("selenium is not installed (pip install -e '.[dev]')")
    binary = _find(BROWSERS, "MECHLIN_CHROMIUM")
    driver_path = _find(DRIVERS, "MECHLIN_CHROMEDRIVER")
    if binary is None or driver_path is None:
        _no_browser(
            f"no {'chromium' if binary is None else 'chromedriver'} on PATH "
            "(Debian: apt-get install chromium chromium-driver; scripts/setup.sh does this as root)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--hide-scrollbars", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    driver.execute_cdp_cmd("Network.enable", {})
    blocked = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": blocked})
    try:
        yield driver
    finally:
        driver.quit()


# ---------------------------------------------------------------- the pages


def _neuron_datasets() -> dict[str, FeatureDataset]:
    """Six small binary datasets the tiny model can read (word present or not)."""
    g = torch.Generator().manual_seed(0)
    words = ["Paris", "Rome", "city", "capital", "located", "trumpet"]
    filler = "The is of in the a located city guitar Tower".split()
    out = {}
    for w in words:
        texts, labels = [], []
        for i in range(24):
            picks = [filler[int(j)] for j in torch.randint(len(filler), (6,), generator=g)]
            if i % 2:
                picks.insert(int(torch.randint(6, (1,), generator=g)), w)
            texts.append(" ".join(picks))
            labels.append(i % 2)
        out[f"has {w}"] = FeatureDataset(
            name=f"has {w}",
            texts=tuple(texts),
            labels=torch.tensor(labels),
            classes=("no", "yes"),
            pooling="max",
            groups=None,
            source="test",
        )
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every kind of report, written by the library and the command on tiny models."""
    out = tmp_path_factory.mktemp("reports")
    tiny = mechlin.tiny_model(seed=0)
    pages: dict[str, Path] = {}
    attrs = {"Italy": ["Rome", "Europe"], "Eiffel Tower": ["Paris", "France"]}
    dissection = mechlin.dissect_recall(
        tiny, PAIRS, attributes=attrs, enrichment_window=2, progress=False
    )
    pages["dissection"] = dissection.report(out / "dissection.html")

    from mechlin.neurons.verdicts import neuron_activations_html

    report = mechlin.classify_neurons(
        tiny, _neuron_datasets(), broad_texts=broad_text(n=8), n_ablation_texts=4, progress=False
    )
    view = neuron_activations_html(tiny, ["The capital of Italy is Rome"], [(0, 1), (1, 2)])
    pages["neurons"] = report.report(out / "neurons.html", extra=[("Neurons on text", view)])

    pairs = out / "pairs.json"
    rows = [{"concept": c, "base": b, "target": t} for c, b, t in WORD_PAIRS]
    pairs.write_text(json.dumps(rows), encoding="utf-8")
    mcq_rows = [
        json.loads(line)
        for line in (ROOT / "mechlin/datasets/data/mcq/arc_easy_dev.jsonl").open(encoding="utf-8")
    ]
    mcq_rows.sort(key=lambda r: len(json.dumps(r["question"])))  # short: the tiny context
    mcq = out / "short_mcq.jsonl"
    mcq.write_text("".join(json.dumps(r) + "\n" for r in mcq_rows[:12]), encoding="utf-8")
    commands = {
        "cli_trace": ["trace", "tiny", *PAIRS[1], "--kind", "all", "--n-samples", "2"],
        "cli_concepts": ["concepts", "tiny", "--pairs", str(pairs), "--n-random", "200"],
        "cli_superposition": ["superposition", "--grid", "2", "--steps", "20", "--seeds", "1"],
        "cli_origins": ["origins", "--steps", "30", "--n-concepts", "4", "--model", "tiny",
                        "--pairs", str(pairs), "--max-pairs", "3"],
        "cli_cognition": ["cognition", "tiny", "tiny-gemma3", "--mcq", str(mcq), "--n-items",
                          "12", "--pass-k", "1", "2", "--n-samples", "2", "--pca-dim", "4"],
    }  # fmt: skip
    for name, argv in commands.items():
        assert cli_main([*argv, "--quiet", "--out", str(out / name)]) == 0, name
        pages[name] = out / name / "report.html"

    # result objects' notebook views, as a notebook would show them
    trace = mechlin.causal_trace(tiny, *PAIRS[0], n_samples=2)
    views = [
        ("CausalTrace", trace._repr_html_()),
        ("KnockoutCurves", dissection.knockout._repr_html_()),
        ("NeuronReport", report._repr_html_()),
        ("attention pattern", viz.attention_pattern_html(tiny, PAIRS[1][0], 1)),
    ]
    pages["result_views"] = viz.write_report(out / "views.html", "Result views", views)

    # hostile text in every user string: shown as text, never run (circuitsvis still renders)
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    hostile = [
        (evil, viz.head_patterns_html(tiny, f"The {evil} Eiffel Tower is in", [(0, 1)])),
        (evil, neuron_activations_html(tiny, [f"a {evil} b"], [(0, 1)])),
        ("trace", mechlin.causal_trace(tiny, f"{evil} Big Ben is in", "Big Ben", n_samples=1)
         ._repr_html_()),
    ]  # fmt: skip
    pages["hostile"] = viz.write_report(out / "hostile.html", evil, hostile)

    notebook_html = ARTIFACTS / "notebooks" / "01_getting_started.html"
    if not notebook_html.exists():  # tests/test_notebooks.py writes it when it runs first
        execute_notebook(ROOT / "notebooks" / "01_getting_started.py", html_out=notebook_html)
    pages["notebook_getting_started"] = notebook_html
    return pages


PAGE_NAMES = [
    "dissection",
    "neurons",
    "cli_trace",
    "cli_concepts",
    "cli_superposition",
    "cli_origins",
    "cli_cognition",
    "result_views",
    "hostile",
    "notebook_getting_started",
]

# ---------------------------------------------------------------- the check

_IMAGES = """return Array.from(document.images)
  .filter(i => !(i.complete && i.naturalWidth > 0))
  .map(i => i.src.slice(0, 80));"""
_CIRCUITSVIS = """return Array.from(document.querySelectorAll('[id^="circuits-vis-"]'))
  .map(e => [e.id, e.childElementCount, e.getBoundingClientRect().height]);"""
_OVERFLOW = """const doc = document.documentElement;
const wide = Array.from(document.querySelectorAll('pre, p, li, h1, h2, h3, td'))
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => e.tagName + ': ' + e.textContent.slice(0, 60));
if (doc.scrollWidth > doc.clientWidth + 1) wide.push('page ' + doc.scrollWidth + 'px wide');
return wide;"""


def _requests(driver: Any) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("file:", "data:", "blob:", "about:")):
                urls.append(url)
    return urls


def _screenshot(driver: Any, path: Path) -> Path:
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {
        "x": 0,
        "y": 0,
        "width": size["width"],
        "height": min(size["height"], 12000),
        "scale": 1,
    }
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_report_opens_offline_and_renders(browser: Any, pages: dict[str, Path], name: str) -> None:
    path = pages[name]
    browser.get_log("browser"), browser.get_log("performance")  # drop earlier pages' entries
    browser.get(path.resolve().as_uri())
    views: list[list[Any]] = []
    for _ in range(40):  # circuitsvis renders with React after load: wait for it
        views = browser.execute_script(_CIRCUITSVIS)
        if browser.execute_script("return document.readyState") == "complete" and all(
            count > 0 for _, count, _ in views
        ):
            break
        time.sleep(0.25)
    shot = _screenshot(browser, SHOTS / f"{name}.png")
    print(f"screenshot: {shot}")
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    requests = _requests(browser)
    broken = browser.execute_script(_IMAGES)
    assert browser.title, f"{name}: page has no title"
    assert not requests, f"{name} requested outside the page: {requests}"
    assert not errors, f"{name}: console errors: {errors}"
    assert not broken, f"{name}: images that do not decode: {broken}"
    assert browser.execute_script("return document.images.length") > 0, f"{name}: no figure"
    empty = [v for v in views if v[1] == 0 or v[2] <= 0]
    assert not empty, f"{name}: circuitsvis views that did not render: {empty}"
    pwned = browser.execute_script("return window.__pwned === undefined ? null : window.__pwned")
    assert pwned is None, f"{name}: markup from user text ran (window.__pwned = {pwned})"
    if name in ("dissection", "neurons", "result_views", "hostile", "notebook_getting_started"):
        assert views, f"{name}: expected a circuitsvis view"
    if not name.startswith("notebook"):  # mechlin's own pages: text wraps, nothing runs off
        wide = browser.execute_script(_OVERFLOW)
        assert not wide, f"{name}: content wider than its box or the page: {wide}"
