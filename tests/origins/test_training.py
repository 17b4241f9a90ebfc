"""Training on the latent-concept model: linearity appears, controls do not show it."""

from __future__ import annotations

import pytest
import torch
from jaxtyping import TypeCheckError

from mechlin import viz
from mechlin.errors import ArgumentError
from mechlin.origins import (
    LatentConceptModel,
    OriginsRun,
    OriginsSweep,
    origins_sweep,
    train_origins,
)


@pytest.fixture(scope="module")
def product_runs() -> dict[str, OriginsRun]:
    """Independent concepts (no edges): the case where the loss's optimum is exactly linear."""
    lcm = LatentConceptModel(5, edge_prob=0, seed=0)
    kw = {"d": 12, "steps": 1500, "lr": 5.0, "batch_size": 256, "init_scale": 0.001}
    kw["record_every"] = 500
    return {
        "trained": train_origins(lcm, **kw),
        "shuffled": train_origins(lcm, shuffle_tokens=True, **kw),
    }


def test_trained_product_case_reaches_linearity_near_one(product_runs) -> None:
    run = product_runs["trained"]
    assert run.final["unembed_linearity"] > 0.95
    assert run.final["context_linearity"] > 0.9
    assert run.final["excess_loss"] < 0.2
    assert abs(run.final["unembed_baseline"]) < 0.05


def test_initial_and_shuffled_models_are_not_linear(product_runs) -> None:
    run = product_runs["trained"]
    assert run.steps[0] == 0 and run.unembed_linearity[0].abs().max() < 0.2
    shuffled = product_runs["shuffled"]
    assert shuffled.final["unembed_linearity"] < 0.1
    assert shuffled.final["excess_loss"] > 1.0  # it cannot fit the true law either


def test_linearity_rises_as_the_loss_falls(product_runs) -> None:
    run = product_runs["trained"]
    lin = run.unembed_linearity.mean(1)
    assert run.loss[-1] < run.loss[0] and lin[-1] > lin[0] + 0.8


def test_same_seed_same_numbers_and_other_options_run() -> None:
    lcm = LatentConceptModel(4, seed=1)
    kw = {"d": 4, "steps": 60, "record_every": 30, "batch_size": 128}
    a, b = train_origins(lcm, **kw), train_origins(lcm, **kw)
    assert torch.equal(a.unembeddings, b.unembeddings) and torch.equal(a.loss, b.loss)
    c = train_origins(lcm, seed=1, **kw)
    assert not torch.equal(a.unembeddings, c.unembeddings)
    for extra in ({"optimizer": "adam"}, {"context_encoder": "mlp"}, {"targets": "expected"}):
        run = train_origins(lcm, **kw, **extra)
        assert run.loss[-1] < run.loss[0], extra


def test_run_result_contract(tmp_path, product_runs) -> None:
    run = product_runs["trained"]
    frame = run.to_frame()
    assert len(frame) == len(run.steps) * run.n_concepts
    assert "linearity" in run.summary() and "optimum" in run.summary()
    fig = run.plot()
    assert len(fig.axes) >= 3
    viz.close(fig)
    back = OriginsRun.load(run.save(tmp_path / "run.pt"))
    assert torch.equal(back.unembed_linearity, run.unembed_linearity)
    assert back.settings == run.settings
    assert "<img" in run._repr_html_()


def test_bad_training_input() -> None:
    lcm = LatentConceptModel(3, seed=0)
    with pytest.raises(ArgumentError, match="d=0 must be a positive integer"):
        train_origins(lcm, d=0)
    with pytest.raises((ArgumentError, TypeCheckError), match=r"optimizer|rmsprop"):
        train_origins(lcm, optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises((ArgumentError, TypeCheckError), match=r"context_encoder|rnn"):
        train_origins(lcm, context_encoder="rnn")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"lr=-1\.0 must be a positive finite number"):
        train_origins(lcm, lr=-1.0)


def test_sweep_has_one_row_per_run_and_a_figure(tmp_path) -> None:
    sweep = origins_sweep(
        n_concepts=4,
        ds=(2,),
        seeds=(0, 1),
        steps=20,
        record_every=10,
        large_m=12,
        large_m_d=3,
        large_m_tokens=40,
        large_m_contexts=60,
    )
    frame = sweep.to_frame()
    assert len(frame) == len(sweep.runs) == 2 * 6
    assert list(dict.fromkeys(frame["condition"])) == [
        "base",
        "contexts 30%",
        "tokens 50%",
        "d=2",
        "adam",
        "m=12, d=3",
    ]
    assert len(sweep.by_condition()) == 6 and "base" in sweep.summary()
    viz.close(sweep.plot())
    back = OriginsSweep.load(sweep.save(tmp_path / "sweep.pt"))
    assert back.conditions == sweep.conditions
    assert torch.equal(back.runs[3].loss, sweep.runs[3].loss)
