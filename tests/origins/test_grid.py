"""The batched grid trainer: its gradient, its padding, its stopping rules and its resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from jaxtyping import TypeCheckError

from mechlin import viz
from mechlin.errors import ArgumentError, OutOfRangeError, StoreMismatchError
from mechlin.origins import OriginsGrid, origins_grid
from mechlin.origins.grid import _pad, gd_step, make_instance, t_interval, train_group
from mechlin.origins.training import expected_loss

KW = dict(n_tokens=24, n_contexts=40)
TRAIN = dict(lr=20.0, init_scale=0.01, tol=0.0, plateau=-math.inf, record_every=5)


def _two(d: int = 3):
    # two instances of other sizes (vocabularies 16 and 24, contexts of other counts)
    return [
        make_instance(4, d, 0, core_prob=0.5, role="grid", **KW),
        make_instance(6, d, 1, core_prob=0.3, role="grid", **KW),
    ]


def test_the_written_out_gradient_is_autograd_on_each_instance_alone() -> None:
    insts = _two()
    p = _pad(insts, 3, 0.5)
    before_f, before_g = p.F.clone(), p.G.clone()
    gd_step(p, 1.0, torch.tensor([True, True]))
    for r, inst in enumerate(insts):
        c, v = inst.data.target.shape
        f = before_f[r, :c].double().requires_grad_()
        g = before_g[r, :v].double().requires_grad_()
        w = inst.data.weight.double() / inst.data.weight.sum()
        logp = torch.log_softmax(f @ g.T, 1)
        loss = -(w[:, None] * torch.where(inst.data.target > 0, inst.data.target * logp, 0)).sum()
        loss.backward()
        # float32 step against a float64 reference: a few float32 ulps of each entry
        tol = dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p.F[r, :c].double(), (f - f.grad).detach(), **tol)
        torch.testing.assert_close(p.G[r, :v].double(), (g - g.grad).detach(), **tol)
        assert float(loss.detach()) == pytest.approx(
            expected_loss(f.detach(), g.detach(), inst.data)
        )
        # padding stays inert: padded tokens and contexts are never moved
        assert not p.G[r, v:].any() and not p.F[r, c:].any()


def test_an_inactive_instance_does_not_move() -> None:
    p = _pad(_two(), 3, 0.5)
    g1 = p.G[1].clone()
    gd_step(p, 1.0, torch.tensor([True, False]))
    assert torch.equal(p.G[1], g1) and not torch.equal(p.G[0], _pad(_two(), 3, 0.5).G[0])


def test_instances_trained_together_equal_each_trained_alone() -> None:
    insts = _two()
    both = train_group(insts, steps=30, **TRAIN)
    for r, inst in enumerate(insts):
        alone = train_group([inst], steps=30, **TRAIN)
        v = len(inst.data.tokens)
        # the same arithmetic per instance; bmm over another batch may round otherwise
        torch.testing.assert_close(both["G"][r, :v], alone["G"][0, :v], rtol=1e-5, atol=1e-6)
        got = torch.tensor(both["records"]["loss"][r])
        want = torch.tensor(alone["records"]["loss"][0])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_stopping_rules() -> None:
    insts = _two()
    base = dict(TRAIN, tol=0.0, plateau=-math.inf)
    st = train_group(insts, steps=12, **base)
    assert st["status"] == ["max steps"] * 2 and st["stopped_at"] == [12, 12]
    assert st["records"]["step"][0] == [0, 5, 10, 12]
    st = train_group(insts, steps=50, **dict(base, tol=100.0))
    assert st["status"] == ["optimum"] * 2 and st["stopped_at"] == [0, 0]
    st = train_group(insts, steps=50, **dict(base, plateau=100.0))
    assert st["status"] == ["stationary"] * 2 and st["stopped_at"] == [5, 5]
    st = train_group(insts, steps=20, **dict(base, lr=1e6, init_scale=10.0))
    assert "diverged" in st["status"]


def test_a_diverged_run_is_retried_at_half_the_step_size() -> None:
    kw = dict(ms=(4,), ds=(2,), seeds=(0,), controls=False, steps=20, record_every=5,
              init_scale=10.0, **KW)  # fmt: skip
    g = origins_grid(lr=1e6, max_halvings=2, **kw)
    assert g.status == ("diverged",) and float(g.lr[0]) == 1e6 / 4  # still diverged: said so
    assert "diverged" in g.summary()
    ok = origins_grid(lr=1.0, max_halvings=2, **kw)
    assert ok.status != ("diverged",) and float(ok.lr[0]) == 1.0


def test_a_resumed_grid_is_bit_identical(tmp_path: Path, monkeypatch) -> None:
    kw = dict(ms=(4,), ds=(2, 3), seeds=(0,), steps=20, record_every=5, **KW)
    whole = origins_grid(**kw)
    from mechlin._store import ItemStore

    calls = {"n": 0}
    real = ItemStore.save

    def flaky(self, key, item):
        real(self, key, item)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # interrupted after the third saved record

    monkeypatch.setattr(ItemStore, "save", flaky)
    with pytest.raises(KeyboardInterrupt):
        origins_grid(out=tmp_path, **kw)
    monkeypatch.setattr(ItemStore, "save", real)
    resumed = origins_grid(out=tmp_path, **kw)
    assert torch.equal(resumed.lin_g, whole.lin_g) and torch.equal(resumed.loss, whole.loss)
    assert torch.equal(resumed.trace.nan_to_num(), whole.trace.nan_to_num())
    with pytest.raises(StoreMismatchError):
        origins_grid(out=tmp_path, **{**kw, "steps": 25})


def test_grid_roles_controls_and_views(tmp_path: Path) -> None:
    g = origins_grid(ms=(4, 8), ds=(2,), seeds=(0, 1), steps=10, record_every=5, **KW)
    assert isinstance(g, OriginsGrid)
    # per (m, seed): the grid's d, the capacity control d = m + 1, the support control
    assert g.role.count("grid") == 4 and g.role.count("capacity") == 4
    assert g.role.count("support") == 2  # only m = 8: m = 4 has core_prob min(0.5, 3/4) = 0.5
    assert sorted(set(g.d[[r == "capacity" for r in g.role]].tolist())) == [5, 9]
    cells = g.cells()
    assert all(c["n_seeds"] == 2 for c in cells)
    for c in cells:
        mean, lo, hi = c["lin_g"]
        assert lo <= mean <= hi
    assert len(g.to_frame()) == len(g.role) and "capacity" in g.summary()
    assert bool((g.excess >= -1e-9).all())  # never below the closed-form optimum
    back = OriginsGrid.load(g.save(tmp_path / "g.pt"))
    assert torch.equal(back.lin_g, g.lin_g) and back.status == g.status
    viz.close(g.plot())


def test_t_interval() -> None:
    mean, _, hi = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert t_interval([0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(x) for x in t_interval([math.nan]))


def test_a_converged_small_model_is_linear() -> None:
    # m = 4, every token and context, d = m + 1: the optimum is reachable and gradient descent
    # gets close to it; the concepts come out linear (the paper's first finding, at the end)
    g = origins_grid(ms=(4,), ds=(5,), seeds=(0,), controls=False, core_prob=0.5, steps=1500,
                     record_every=100, n_tokens=16, n_contexts=81, tol=0.05, lr=5.0)  # fmt: skip
    assert g.status == ("optimum",)
    assert float(g.lin_g[0]) > 0.9 and abs(float(g.base_g[0])) < 0.1


def test_bad_grids() -> None:
    with pytest.raises(ArgumentError):
        origins_grid(ms=(), ds=(2,))
    with pytest.raises((ArgumentError, TypeCheckError)):  # the test hook checks types first
        origins_grid(ms=(4.0,), ds=(2,))
    with pytest.raises(OutOfRangeError):
        origins_grid(ms=(4,), ds=(0,))
    with pytest.raises(OutOfRangeError):
        origins_grid(ms=(4,), ds=(2,), core_prob=0.0)
    with pytest.raises(ArgumentError, match="lr=-1"):  # the shared rule for lr
        origins_grid(ms=(4,), ds=(2,), lr=-1)
    with pytest.raises(ArgumentError):
        train_group([make_instance(4, 2, 0, core_prob=0.5, role="grid", **KW),
                     make_instance(4, 3, 0, core_prob=0.5, role="grid", **KW)],
                    steps=1, **TRAIN)  # fmt: skip
