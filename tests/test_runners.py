"""Runners: the same records here and on Ray workers, resumable, nothing computed twice.

The Ray tests start a local cluster of 2 CPUs themselves (one module-scoped ``ray.init``) and
run 2 workers; they are skipped where Ray is not installed (and fail under CI=true).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import mechlin
from mechlin._store import ItemStore, model_fingerprint
from mechlin.errors import ArgumentError, ArgumentTypeError, MissingExtraError
from mechlin.runners import (
    RAY_INSTALL,
    Item,
    LocalRunner,
    ModelSource,
    RayRunner,
    as_model_source,
    run_items,
)

FACTS = [
    ("The Eiffel Tower is located in the city of", "Eiffel Tower", "Paris"),
    ("The Colosseum is located in the city of", "Colosseum", "Rome"),
    ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "French"),
]
PAIRS = [(p, s) for p, s, _ in FACTS]
TEXTS = [
    "The cat sat on the mat.",
    "Paris is the capital of France.",
    "Rain falls on the hills in spring",
    "A short one",
    "Numbers: one, two, three, four, five.",
    "The quick brown fox jumps over the lazy dog",
]
ACE = dict(kinds=("resid",), n_samples=2, progress=False)


def _counted(model: object, payload: dict) -> torch.Tensor:
    """A test work function: slow enough to be killed mid-run; logs each finished item."""
    time.sleep(payload["sleep"])
    with open(payload["log"], "a") as f:
        f.write(payload["key"] + "\n")
    return torch.tensor([payload["i"]])


def _items(log: Path, keys: range, sleep: float = 0.0) -> list[Item]:
    return [Item(f"k{i:03d}", dict(key=f"k{i:03d}", i=i, log=str(log), sleep=sleep)) for i in keys]


def _log(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# --- here ------------------------------------------------------------------------------------


def test_local_runner_is_the_default_and_resumes(tiny, tmp_path: Path) -> None:
    default = mechlin.average_causal_effects(tiny, PAIRS, noise=1.0, **ACE)
    local = mechlin.average_causal_effects(tiny, PAIRS, noise=1.0, runner=LocalRunner(), **ACE)
    assert torch.equal(default.aie, local.aie) and torch.equal(default.se, local.se)

    log = tmp_path / "log.txt"
    store = ItemStore(tmp_path / "store", kind="test", settings={})
    got = LocalRunner().map(tiny, _counted, _items(log, range(4)), store=store, progress=False)
    assert [int(got[k]) for k in got] == [0, 1, 2, 3]
    LocalRunner().map(tiny, _counted, _items(log, range(6)), store=store, progress=False)
    assert sorted(_log(log)) == [f"k{i:03d}" for i in range(6)]  # the first 4 not again
    assert run_items(tiny, _counted, _items(log, range(2)), store=None)["k001"] == 1


def test_missing_ray_gives_the_pip_command(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MissingExtraError, match="pip install 'mechlin\\[ray\\]'"):
        RayRunner(num_workers=1).map(tiny, _counted, [Item("a", {})], progress=False)
    assert RAY_INSTALL == "pip install 'mechlin[ray]'"


def test_model_sources_and_their_errors(tiny, tmp_path: Path) -> None:
    assert as_model_source(tiny) == ModelSource("tiny", tiny.mechlin_source["kwargs"], "tiny_model")
    assert as_model_source("smollm2-135m") == ModelSource("smollm2-135m")
    assert as_model_source(tmp_path).name == str(tmp_path)
    assert model_fingerprint(as_model_source(tiny).load()) == model_fingerprint(tiny)

    def loader() -> object:
        return tiny

    assert as_model_source(loader).load() is tiny

    class Bare:  # a model that records no source
        cfg = tiny.cfg

    with pytest.raises(ArgumentError, match=r"RayRunner\(model=\.\.\.\)"):
        as_model_source(Bare())
    with pytest.raises(ArgumentTypeError, match="bundled name, a directory"):
        RayRunner(model=3)
    with pytest.raises(ArgumentError, match="no such directory"):
        RayRunner(model=tmp_path / "missing")
    with pytest.raises(ArgumentError, match="num_workers=0"):
        RayRunner(num_workers=0)
    with pytest.raises(ArgumentError, match="not both"):
        mechlin.load_model("smollm2-135m", device="cpu", device_map="cpu")


def test_device_map_split_across_modules_keeps_results(tiny, tmp_path: Path) -> None:
    """A device map with one entry per module (all on the CPU, all this machine has) loads,
    and the analyses give the single-device results. (With a single device transformers
    places the weights without dispatch hooks: a split across GPUs is not tested here.)"""
    from mechlin.tiny import tiny_hf_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tiny_hf_model(vocab_size=len(tokenizer)).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    one = mechlin.load_model(str(tmp_path / "m"), device="cpu")
    n = int(tiny.cfg.n_layers)
    device_map = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu"}
    device_map |= {f"model.layers.{i}": "cpu" for i in range(n)} | {"lm_head": "cpu"}
    split = mechlin.load_model(str(tmp_path / "m"), device_map=device_map)
    assert split.mechlin_source["kwargs"]["device_map"] == device_map
    tokens = one.to_tokens("The Eiffel Tower is located in")
    assert torch.equal(one(tokens), split(tokens))
    a = mechlin.collect_activations(one, TEXTS[:3], progress=False, batch_size=2)
    b = mechlin.collect_activations(split, TEXTS[:3], progress=False, batch_size=2)
    assert all(torch.equal(a[h], b[h]) for h in a.hooks)
    x = mechlin.causal_trace(one, FACTS[0][0], FACTS[0][1], n_samples=2, noise=1.0)
    y = mechlin.causal_trace(split, FACTS[0][0], FACTS[0][1], n_samples=2, noise=1.0)
    assert torch.equal(x.scores, y.scores)


# --- Ray -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    if os.environ.get("CI"):  # CI installs the extra (scripts/setup.sh): a missing Ray fails
        import ray
    else:
        ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'mechlin[ray]'")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as many as each worker: float sums then agree bit for bit
    root = str(Path(__file__).resolve().parents[1])  # workers import tests.test_runners
    os.environ["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_runner(ray_cluster):
    with RayRunner(num_workers=2, chunk_size=1) as runner:
        yield runner


@pytest.mark.bundled
def test_ray_average_causal_effects_equal_single_process(
    smollm2, ray_runner, tmp_path: Path
) -> None:
    single = mechlin.average_causal_effects(smollm2, FACTS, **ACE)
    spread = mechlin.average_causal_effects(smollm2, FACTS, runner=ray_runner, out=tmp_path, **ACE)
    assert spread.n_known == single.n_known > 0
    for name in ("aie", "se", "n_pooled"):
        assert torch.equal(getattr(single, name), getattr(spread, name)), name
    assert (single.ate, single.clean_score) == (spread.ate, spread.clean_score)
    # the store the workers wrote resumes in this process, bit for bit
    resumed = mechlin.average_causal_effects(smollm2, FACTS, out=tmp_path, **ACE)
    assert torch.equal(resumed.aie, single.aie)


@pytest.mark.bundled
def test_ray_collect_activations_equal_single_process(smollm2, ray_runner, tmp_path: Path) -> None:
    kw = dict(chunk_size=2, batch_size=2, progress=False)
    single = mechlin.collect_activations(smollm2, TEXTS, **kw)
    in_memory = mechlin.collect_activations(smollm2, TEXTS, runner=ray_runner, **kw)
    stored = mechlin.collect_activations(smollm2, TEXTS, runner=ray_runner, out=tmp_path, **kw)
    for h in single.hooks:
        assert torch.equal(single[h], in_memory[h]) and torch.equal(single[h], stored[h]), h


def test_ray_killed_worker_is_replaced_and_nothing_is_computed_twice(
    ray_cluster, ray_runner, tiny, tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    store = ItemStore(tmp_path / "store", kind="test", settings={})
    items = _items(log, range(10), sleep=0.4)
    runner = ray_runner  # its workers now load the tiny model (the cluster has 2 CPUs)
    out: dict = {}
    thread = threading.Thread(
        target=lambda: out.update(got=runner.map(tiny, _counted, items, store=store))
    )
    thread.start()
    deadline = time.time() + 120
    while len(_log(log)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert len(_log(log)) < len(items), "the run ended before a worker could be killed"
    ray_cluster.kill(runner.workers[0])  # mid-run: it holds an item it is computing
    thread.join(timeout=180)
    assert not thread.is_alive()
    assert runner.replaced == 1
    assert all(store.verify(i.key) for i in items)
    assert sorted(_log(log)) == sorted(i.key for i in items)  # each computed exactly once
    assert [int(out["got"][i.key]) for i in items] == list(range(10))
    assert not list((tmp_path / "store").glob("*.claim"))

    # an interrupted run resumes: only the items not yet stored are computed
    more = _items(log, range(13))
    runner.map(tiny, _counted, more, store=store, progress=False)
    assert sorted(_log(log)) == sorted(i.key for i in more)


def test_ray_other_analyses_equal_single_process(ray_runner, tiny, tmp_path: Path) -> None:
    """knockout_curves, extraction_rates, attributes_rate and expression_scores on 2 workers
    (the tiny model, which the previous test left loaded on them)."""
    from mechlin.datasets.mcq import load_mcq

    attributes = {"Eiffel Tower": ["Paris", "France"], "Colosseum": ["Rome", "Italy"]}
    ds = load_mcq("arc_easy").subset(range(4))
    for run in (
        lambda **kw: mechlin.knockout_curves(tiny, PAIRS, **kw).mean,
        lambda **kw: mechlin.extraction_rates(tiny, PAIRS, **kw).head_rank,
        lambda **kw: mechlin.attributes_rate(tiny, PAIRS, attributes, top_k=50, **kw).rate,
        lambda **kw: (
            mechlin.expression_scores(tiny, ds, chunk_size=2, n_samples=4, **kw).letter_logprob
        ),
    ):
        assert torch.equal(run(progress=False), run(progress=False, runner=ray_runner))
    stored = mechlin.expression_scores(
        tiny, ds, chunk_size=2, runner=ray_runner, out=tmp_path, progress=False
    )
    assert torch.equal(stored.option_loglik, mechlin.expression_scores(tiny, ds, out=tmp_path,
                       chunk_size=2, progress=False).option_loglik)  # fmt: skip
