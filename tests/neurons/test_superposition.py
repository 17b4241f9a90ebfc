"""Toy models of superposition: measures against loops, known solutions, batching, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from jaxtyping import TypeCheckError

from mechlin import viz
from mechlin.errors import ArgumentError, NotInResultError
from mechlin.neurons.capacity_sweep import (
    PHASES,
    CapacityAllocation,
    PhaseDiagram,
    SuperpositionSweep,
    capacity_allocation,
    phase_diagram,
    superposition_sweep,
)
from mechlin.neurons.superposition import (
    ToySuperposition,
    feature_measures,
    neuron_shares,
    toy_superposition,
)

FAST = dict(steps=1000, lr=1e-2, batch_size=512)  # converges like 10k steps at lr 1e-3


def _loop_measures(W: torch.Tensor) -> dict[str, list[float]]:
    """Obviously-correct reference: the papers' formulas, one feature at a time."""
    W = W.double()
    out: dict[str, list[float]] = {"norm": [], "superposition": [], "capacity": [], "dim": []}
    for i in range(W.shape[0]):
        wi = W[i]
        norm = math.sqrt(sum(float(v) ** 2 for v in wi))
        out["norm"].append(norm)
        if norm < 1e-8:
            out["superposition"].append(0.0)
            out["capacity"].append(0.0)
            out["dim"].append(0.0)
            continue
        hat = wi / norm
        sup = sum(float(hat @ W[j]) ** 2 for j in range(W.shape[0]) if j != i)
        cap = float(wi @ wi) ** 2 / sum(float(wi @ W[j]) ** 2 for j in range(W.shape[0]))
        dim = norm**2 / sum(float(hat @ W[j]) ** 2 for j in range(W.shape[0]))
        out["superposition"].append(sup)
        out["capacity"].append(cap)
        out["dim"].append(dim)
    return out


# ---------------------------------------------------------------- measures


def test_measures_equal_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 7, 3, generator=g)
    W[1, 4] = 0.0  # a dropped feature: measures 0, not NaN
    m = feature_measures(W)
    for k in range(3):
        ref = _loop_measures(W[k])
        for key, name in (
            ("norm", "norm"),
            ("superposition", "superposition"),
            ("capacity", "capacity"),
            ("dimensionality", "dim"),
        ):
            torch.testing.assert_close(
                m[key][k], torch.tensor(ref[name], dtype=torch.float64), atol=1e-12, rtol=1e-10
            )
    # Elhage's dimensionality and Scherlis's capacity are the same number
    torch.testing.assert_close(m["capacity"], m["dimensionality"])


@pytest.mark.parametrize(("n", "d", "seed"), [(2, 1, 0), (5, 2, 1), (20, 5, 2), (3, 6, 3)])
def test_total_capacity_at_most_d(n: int, d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(50, n, d, generator=g) * torch.rand(50, n, 1, generator=g) ** 3
    cap = feature_measures(W)["capacity"]
    assert bool((cap >= 0).all()) and bool((cap <= 1 + 1e-12).all())
    assert float(cap.sum(-1).max()) <= min(n, d) + 1e-6
    # orthonormal directions reach the bound
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ortho = q[: min(n, d)]  # min(n, d) orthonormal directions in R^d
    assert float(feature_measures(ortho)["capacity"].sum()) == pytest.approx(min(n, d))


def test_neuron_shares_loop_reference() -> None:
    W = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.0, 0.0], [-2.0, 0.0, 1.0]])  # feature x neuron
    share = neuron_shares(W)  # neuron x feature
    torch.testing.assert_close(share[0], torch.tensor([0.8, 0.2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(share[1], torch.zeros(3, dtype=torch.float64))  # dead
    torch.testing.assert_close(share[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


# ---------------------------------------------------------------- known solutions


def test_dense_equal_importance_is_the_pca_solution() -> None:
    n, d = 6, 2
    toy = toy_superposition(n, d, sparsity=0.0, importance=1.0, seed=0, **FAST)
    W = toy.W[0].double()
    # W^T W is a rank-d orthogonal projection: d eigenvalues 1, the rest 0
    eig = torch.linalg.eigvalsh(W @ W.T).flip(0)
    torch.testing.assert_close(eig[:d], torch.ones(d, dtype=torch.float64), atol=0.03, rtol=0)
    assert float(eig[d:].abs().max()) < 0.03
    assert float(toy.capacity.sum()) == pytest.approx(d, abs=0.02)
    # closed form: the n - d unrepresented unit-variance-1/12 features cost 1/12 each (the
    # output ReLU can only clip an error, so a trained model may land a little below)
    closed = (n - d) / 12
    assert closed * 0.97 <= float(toy.loss[0]) <= closed * 1.01


def test_dense_keeps_the_d_most_important_features() -> None:
    n, d, r = 6, 2, 0.7
    toy = toy_superposition(n, d, sparsity=0.0, importance=r, seed=0, **FAST)
    cap = toy.capacity[0]
    assert bool((cap[:d] > 0.97).all()), cap
    assert bool((cap[d:] < 0.03).all()), cap
    torch.testing.assert_close(
        toy.norms[0, :d], torch.ones(d, dtype=torch.float64), atol=0.03, rtol=0
    )
    # closed form: the d most important features reconstructed exactly, the rest at their mean
    closed = sum(r**i for i in range(d, n)) / 12
    assert float(toy.loss[0]) == pytest.approx(closed, rel=0.03)


def test_sparse_features_give_an_antipodal_pair() -> None:
    toy = toy_superposition(2, 1, sparsity=0.95, n_instances=2, seed=0, **FAST).best()
    w = toy.W[0, :, 0]
    torch.testing.assert_close(toy.norms[0], torch.ones(2, dtype=torch.float64), atol=0.05, rtol=0)
    assert float(w[0] * w[1]) < -0.9
    torch.testing.assert_close(
        toy.capacity[0], torch.full((2,), 0.5, dtype=torch.float64), atol=0.02, rtol=0
    )


def test_sparse_features_outnumber_dimensions() -> None:
    n, d = 5, 2
    dense = toy_superposition(n, d, sparsity=0.0, importance=1.0, seed=0, **FAST)
    sparse = toy_superposition(n, d, sparsity=0.97, importance=1.0, seed=0, **FAST)
    assert int(dense.n_represented()[0]) <= d + 1
    assert int(((sparse.norms[0] - 1).abs() < 0.2).sum()) > d
    assert float(sparse.interference[0].max()) > 0.3  # those extra features share
    assert float(sparse.capacity.sum()) <= d + 1e-6


def test_relu_hidden_dedicates_neurons_when_there_is_room() -> None:
    # a neuron whose initial weights are all negative never fires: keep the best of 4 seeds
    toy = toy_superposition(3, 3, sparsity=0.0, hidden="relu", n_instances=4, **FAST).best()
    roles = toy.neurons()
    assert roles.labels[0] == ("monosemantic",) * 3
    assert sorted(int(roles.share[0, j].argmax()) for j in range(3)) == [0, 1, 2]
    assert "no superposition is needed" in toy.summary()


def test_neuron_labels_from_weights() -> None:
    W = torch.tensor([[[1.0, 0.0, 0.7], [0.0, 0.01, 0.7], [-0.5, 0.0, 0.0]]])  # feature x neuron
    toy = ToySuperposition(
        W=W,
        b=torch.zeros(1, 3),
        importance=torch.ones(1, 3),
        sparsity=torch.tensor([0.9]),
        loss=torch.tensor([0.0]),
        seeds=(0,),
        hidden="relu",
        steps=1,
        lr=1e-3,
        weight_decay=0.0,
        batch_size=1,
    )
    roles = toy.neurons(threshold=0.1, dead_weight=0.05)
    assert roles.labels[0] == ("monosemantic", "dead", "polysemantic")
    assert roles.n_features[0].tolist() == [1, 0, 2]
    assert roles.counts() == {"monosemantic": 1, "polysemantic": 1, "dead": 1}
    assert len(roles.to_frame()) == 3
    linear = ToySuperposition(**{**toy.__dict__, "hidden": "linear"})
    with pytest.raises(ArgumentError, match="no privileged basis"):
        linear.neurons()


# ---------------------------------------------------------------- determinism and batching


def test_same_seed_same_numbers() -> None:
    kw = dict(sparsity=0.9, importance=0.8, steps=200, batch_size=128)
    a = toy_superposition(5, 2, seed=3, **kw)
    b = toy_superposition(5, 2, seed=3, **kw)
    c = toy_superposition(5, 2, seed=4, **kw)
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.W, c.W)


@pytest.mark.parametrize("hidden", ["linear", "relu"])
def test_batched_instances_equal_each_trained_alone(hidden: str) -> None:
    sparsity = [0.0, 0.8, 0.97]
    importance = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.9, 0.8, 0.7], [0.5, 1.0, 2.0, 1.0]])
    kw = dict(hidden=hidden, steps=300, batch_size=64, seed=10)
    batched = toy_superposition(4, 2, sparsity=sparsity, importance=importance, **kw)
    for k in range(3):
        alone = toy_superposition(
            4, 2, sparsity=sparsity[k], importance=importance[k], **{**kw, "seed": 10 + k}
        )
        torch.testing.assert_close(batched.W[k], alone.W[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.b[k], alone.b[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.loss[k], alone.loss[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(
            batched.instance(k).W, alone.W, atol=1e-5, rtol=1e-5
        )  # the view too


def test_n_instances_repeats_settings_with_consecutive_seeds() -> None:
    toy = toy_superposition(3, 1, sparsity=0.5, n_instances=3, steps=20, batch_size=16, seed=5)
    assert toy.seeds == (5, 6, 7) and toy.W.shape == (3, 3, 1)
    assert toy.best().loss.item() == float(toy.loss.min())
    with pytest.raises(NotInResultError):
        toy.instance(3)


def test_result_views_and_save_load(tmp_path) -> None:
    toy = toy_superposition(4, 2, sparsity=[0.0, 0.9], importance=0.9, steps=50, batch_size=32)
    frame = toy.to_frame()
    assert len(frame) == 8 and set(frame.columns) >= {"capacity", "norm", "superposition"}
    back = ToySuperposition.load(toy.save(tmp_path / "toy.pt"))
    assert torch.equal(back.W, toy.W) and back.seeds == toy.seeds
    fig = toy.plot()
    viz.close(fig)
    assert "ToySuperposition" in toy._repr_html_()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sparsity=1.0), r"sparsity=1.0 must be a probability in \[0, 1\)"),
        (dict(sparsity=-0.1), r"sparsity=-0.1 must be a probability in \[0, 1\)"),
        (dict(sparsity=[0.5, 1.2]), "sparsity must lie in"),
        (dict(sparsity=[]), "sparsity is empty"),
        (dict(importance=[1.0, 1.0]), "importance must be"),
        (dict(importance=0.0), "decay rate"),
        (dict(importance=[1.0, -1.0, 1.0]), ">= 0"),
        (dict(importance=[0.0, 0.0, 0.0]), "not all 0"),
        (dict(steps=0), "steps=0 must be a positive integer"),
        (dict(batch_size=0), "batch_size=0 must be a positive integer"),
        (dict(lr=0.0), "lr=0.0 must be a positive finite number"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(sparsity=[0.1, 0.2], importance=torch.ones(3, 3)), "instances"),
        (dict(sparsity=[0.1, 0.2], n_instances=3), "instances"),
        (dict(n_instances=0), "n_instances"),
    ],
)
def test_bad_input_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        toy_superposition(3, 2, **{"steps": 5, **kwargs})


@pytest.mark.parametrize(("n", "d"), [(0, 2), (3, 0), (-1, 1)])
def test_bad_sizes_are_refused(n, d) -> None:
    with pytest.raises(
        ArgumentError, match=r"(n_features|d_hidden)=-?\d+ must be a positive integer"
    ):
        toy_superposition(n, d, steps=5)


@pytest.mark.parametrize("kwargs", [dict(hidden="tanh"), dict(seed=1.5), dict(n_features=2.0)])
def test_wrong_types_are_refused(kwargs: dict) -> None:
    # ArgumentError at run time; the test run's beartype hook may catch the type first
    with pytest.raises((ArgumentError, TypeCheckError)):
        toy_superposition(**{"n_features": 3, "d_hidden": 2, "steps": 5, **kwargs})


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (phase_diagram, dict(grid=0), "grid"),
        (phase_diagram, dict(n_seeds=0), "n_seeds"),
        (phase_diagram, dict(n_features=1), "n_features"),
        (phase_diagram, dict(sparsities=[0.5, 1.0]), "sparsities"),
        (phase_diagram, dict(relative_importances=[0.0]), "relative_importances"),
        (capacity_allocation, dict(sparsities=[]), "sparsities"),
        (capacity_allocation, dict(importance=torch.ones(2, 20)), "importance"),
        (capacity_allocation, dict(steps=0), "steps"),
    ],
)
def test_bad_sweep_input_is_refused(fn, kwargs: dict, match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        fn(**{"steps": 5, **kwargs})


# ---------------------------------------------------------------- sweeps


def test_phase_diagram_finds_the_phases(tmp_path) -> None:
    pd_ = phase_diagram(
        sparsities=[0.0, 0.97],
        relative_importances=[0.3, 3.0],
        n_seeds=2,
        steps=1000,
        lr=1e-2,
        batch_size=256,
    )
    names = [[PHASES[int(v)] for v in row] for row in pd_.phase]
    # dense: the less important feature is dropped, a more important one takes the dimension
    assert names[0][0] == "not represented" and names[1][0] == "dedicated"
    assert names[0][1] == "superposition"  # sparse: the two share the dimension
    assert pd_.onset(0.3) == pytest.approx(0.97)
    back = PhaseDiagram.load(pd_.save(tmp_path / "phase.pt"))
    assert torch.equal(back.phase, pd_.phase)
    assert len(pd_.to_frame()) == 4
    viz.close(pd_.plot())


def test_capacity_allocation_follows_importance() -> None:
    cap = capacity_allocation(
        n_features=6, d_hidden=2, sparsities=[0.0, 0.9], importance=0.7, steps=1000,
        lr=1e-2, batch_size=256,
    )  # fmt: skip
    counts = cap.counts()
    assert counts["dedicated"][0] == 2 and counts["ignored"][0] == 4  # dense: PCA
    assert int(counts["fractional"][1]) >= 2  # sparse: features share capacity
    assert bool((cap.total <= 2 + 1e-6).all())
    assert int(cap.order_violations()[0]) == 0
    assert float(cap.capacity[1, 0]) >= float(cap.capacity[1, -1])


def test_superposition_sweep_views(tmp_path) -> None:
    sw = superposition_sweep(
        grid=2, capacity_features=(3, 4), sparsities=(0.0, 0.9), steps=30, batch_size=32
    )
    assert isinstance(sw.capacity, CapacityAllocation)
    assert "no superposition is needed" in sw.summary()
    back = SuperpositionSweep.load(sw.save(tmp_path / "sweep.pt"))
    assert torch.equal(back.capacity.capacity, sw.capacity.capacity)
    frame = sw.to_frame()
    assert set(frame["part"]) == {"phase", "capacity"} and len(frame) == 4 + 6
    viz.close(sw.plot())
    assert "<img" in sw._repr_html_()
