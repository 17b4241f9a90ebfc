"""The one resumable store: pinned to its settings and model, checksummed, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechlin
from mechlin._store import ItemStore, atomic_write, model_fingerprint
from mechlin.errors import NotAStoreError, StoreMismatchError
from mechlin.neurons import activations as act_mod

TEXTS = ["a cat sat on the mat", "the dog ran away", "birds fly south", "rain falls"]
FACTS = [
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("The Colosseum is located in the city of", "Colosseum"),
]
KW = dict(kinds=("resid",), n_samples=2, noise=1.0, progress=False)


def _flip_byte(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_store_refuses_other_settings_and_kinds(tmp_path: Path) -> None:
    ItemStore(tmp_path, kind="a", settings={"x": 1})
    ItemStore(tmp_path, kind="a", settings={"x": 1})  # same: resumes
    with pytest.raises(StoreMismatchError, match=r"other settings \(x\)"):
        ItemStore(tmp_path, kind="a", settings={"x": 2})
    with pytest.raises(StoreMismatchError, match="holds a 'a' store, not a 'b' one"):
        ItemStore(tmp_path, kind="b", settings={"x": 1})
    with pytest.raises(NotAStoreError):
        mechlin.NeuronActivations.load(tmp_path / "nothing-here")


def test_damaged_item_is_reported_and_treated_as_missing(tmp_path: Path) -> None:
    store = ItemStore(tmp_path, kind="a", settings={})
    store.save("k", {"v": torch.arange(100)})
    assert torch.equal(store.get("k")["v"], torch.arange(100))
    _flip_byte(store.path("k"))
    with pytest.warns(UserWarning, match="damaged"):
        assert store.get("k") is None
    assert not store.has("k")


def test_fingerprint_tells_checkpoints_apart(tiny) -> None:
    same = mechlin.tiny_model(seed=0)
    other = mechlin.tiny_model(seed=3)  # same architecture and name, other weights
    assert model_fingerprint(tiny) == model_fingerprint(same)
    assert model_fingerprint(tiny) != model_fingerprint(other)
    assert model_fingerprint(tiny) != model_fingerprint(
        mechlin.tiny_model(seed=0, dtype=torch.float64)
    )


def test_causal_effects_store_is_bound_to_its_model(tiny, tmp_path: Path) -> None:
    mechlin.average_causal_effects(tiny, FACTS, out=tmp_path, **KW)
    with pytest.raises(StoreMismatchError, match="model"):
        mechlin.average_causal_effects(mechlin.tiny_model(seed=3), FACTS, out=tmp_path, **KW)


def test_causal_effects_recompute_a_damaged_fact(tiny, tmp_path: Path, monkeypatch) -> None:
    from mechlin.recall import causal_effects

    whole = mechlin.average_causal_effects(tiny, FACTS, out=tmp_path, **KW)
    item = sorted(tmp_path.glob("fact-*.pt"))[0]
    _flip_byte(item)
    calls: list[str] = []
    real = causal_effects.causal_trace
    monkeypatch.setattr(
        causal_effects,
        "causal_trace",
        lambda m, p, *a, **k: (calls.append(p), real(m, p, *a, **k))[1],
    )
    with pytest.warns(UserWarning, match="damaged"):
        again = mechlin.average_causal_effects(tiny, FACTS, out=tmp_path, **KW)
    assert len(calls) == 1  # only the damaged fact, once per kind
    assert torch.equal(again.aie, whole.aie)


def test_activation_store_bound_to_model_and_checksummed(tiny, tmp_path: Path, monkeypatch) -> None:
    ref = mechlin.collect_activations(tiny, TEXTS, progress=False)
    mechlin.collect_activations(tiny, TEXTS, out=tmp_path, chunk_size=2, progress=False)
    with pytest.raises(StoreMismatchError, match="model"):
        mechlin.collect_activations(mechlin.tiny_model(seed=3), TEXTS, out=tmp_path, progress=False)
    hook = ref.hooks[0]
    _flip_byte(tmp_path / f"hook.{hook}.pt", offset=-5)
    with (
        pytest.raises(StoreMismatchError, match="damaged"),
        pytest.warns(UserWarning, match="damaged"),
    ):
        mechlin.NeuronActivations.load(tmp_path)  # reported, and the damaged file removed
    calls: list[int] = []
    real = act_mod._run_chunk
    monkeypatch.setattr(act_mod, "_run_chunk", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    again = mechlin.collect_activations(tiny, TEXTS, out=tmp_path, chunk_size=2, progress=False)
    assert len(calls) == 2  # both chunks recomputed: the finished store had dropped them
    torch.testing.assert_close(again[hook], ref[hook])


def test_truncated_chunk_is_recomputed(tiny, tmp_path: Path, monkeypatch) -> None:
    real = act_mod._run_chunk
    seen: list[int] = []

    def stop_after_first(*args, **kwargs):
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(act_mod, "_run_chunk", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        mechlin.collect_activations(tiny, TEXTS, out=tmp_path, chunk_size=2, progress=False)
    chunk = next((tmp_path / "chunks").glob("*.pt"))
    chunk.write_bytes(chunk.read_bytes()[:50])  # a truncated file
    monkeypatch.setattr(act_mod, "_run_chunk", real)
    with pytest.warns(UserWarning, match="damaged"):
        again = mechlin.collect_activations(tiny, TEXTS, out=tmp_path, chunk_size=2, progress=False)
    ref = mechlin.collect_activations(tiny, TEXTS, progress=False)
    torch.testing.assert_close(again[0], ref[0])


def test_claims_are_exclusive_and_stale_claims_are_taken_over(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import threading

    a = ItemStore(tmp_path, kind="a", settings={})
    b = ItemStore(tmp_path, kind="a", settings={})
    assert a.claim("k") and not b.claim("k")  # one writer per item, even in one process
    a.release("k")
    host = __import__("socket").gethostname()
    other = {"host": host, "pid": os.getppid()}  # a live process that is not this one
    (tmp_path / "k.claim").write_text(json.dumps(other))
    assert not b.claim("k") and b.claimed("k")
    done = threading.Timer(0.3, lambda: (a.save("k", {"v": 1}), a.release("k")))
    done.start()
    assert b.wait_for("k", poll_s=0.05) == {"v": 1}  # waits for the live writer's item
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "j.claim").write_text(
        json.dumps({"host": __import__("socket").gethostname(), "pid": dead.pid})
    )
    assert b.wait_for("j") is None  # the writer died: nothing to wait for
    assert b.claim("j")  # and its stale claim is taken over


_WRITER = """
import sys, mechlin
from mechlin.neurons import activations as act
real = act._run_chunk
def counted(*a, **k):
    with open(sys.argv[2], "a") as f:
        f.write("x")
    return real(*a, **k)
act._run_chunk = counted
texts = [f"text number {i} about cats and dogs" for i in range(12)]
acts = mechlin.collect_activations(mechlin.tiny_model(seed=0), texts, out=sys.argv[1],
                                   chunk_size=2, progress=False)
print(float(acts[0].sum()))
"""


def test_two_writers_share_one_activation_store(tmp_path: Path) -> None:
    """Two processes on one store: no crash, every chunk computed once, the same result."""
    import subprocess
    import sys

    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    counter = tmp_path / "computed.txt"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "store"), str(counter)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    sums = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(sums) == 1  # both read the same finished store
    assert len(counter.read_text()) == 6  # 12 texts / chunk_size 2: each chunk computed once
