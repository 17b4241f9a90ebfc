"""classify_neurons and its pieces against explicit loops; a real language neuron in SmolLM2."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from mechlin.datasets.features import FeatureDataset, broad_text, language_identity
from mechlin.neurons.activations import collect_activations
from mechlin.neurons.probing import neuron_scores, split_indices
from mechlin.neurons.verdicts import (
    NeuronReport,
    _ablation_hook,
    best_single_neurons,
    classify_neurons,
    lm_loss,
    neuron_activations_html,
    prune_curve,
    top_activating_tokens,
)


def _sk_f1(X: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(C=1.0, class_weight="balanced", tol=1e-10, max_iter=10_000)
        clf.fit(X[train].numpy(), y[train].numpy())
    return float(f1_score(y[test].numpy(), clf.predict(X[test].numpy())))


def _synthetic(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(300, 40, generator=g, dtype=torch.float64)
    y = torch.rand(300, generator=g) < 0.4
    for j, s in ((3, 1.5), (11, 1.2), (20, 1.0), (31, 0.8)):  # several partial carriers
        X[:, j] += s * y
    return X, y


def test_best_single_neurons_equal_explicit_sklearn_loop() -> None:
    X, y = _synthetic()
    train, test = split_indices(y, split="stratified")
    neurons, f1, train_f1, _, _ = best_single_neurons(X, y, train, test, top=10)
    order = torch.argsort(neuron_scores(X[train], y[train], "mean_diff"), descending=True)
    assert neurons.tolist() == order[:10].tolist()
    for n, score in zip(neurons.tolist(), f1.tolist(), strict=True):
        assert score == pytest.approx(_sk_f1(X[:, [n]], y, train, test), abs=1e-9)
    for n, score in zip(neurons.tolist(), train_f1.tolist(), strict=True):
        assert score == pytest.approx(_sk_f1(X[:, [n]], y, train, train), abs=1e-9)


def test_prune_curve_equals_explicit_loop() -> None:
    X, y = _synthetic()
    train, test = split_indices(y, split="stratified")
    curve = prune_curve(X, y, train, test, steps=4, top=40)
    order = torch.argsort(neuron_scores(X[train], y[train], "mean_diff"), descending=True)
    remaining = order.tolist()  # best first by mean difference: the tie order
    for step in range(5):
        train_f1 = [_sk_f1(X[:, [n]], y, train, train) for n in remaining]
        best = remaining[int(np.argmax(train_f1))]  # chosen on training data only
        assert curve[step] == pytest.approx(_sk_f1(X[:, [best]], y, train, test), abs=1e-9)
        remaining.remove(best)
        order = torch.argsort(
            neuron_scores(X[train][:, remaining], y[train], "mean_diff"), descending=True
        )
        remaining = [remaining[i] for i in order.tolist()]


def test_lm_loss_equals_model_loss(tiny: Any) -> None:
    texts = ["a cat sat on the mat", "the dog ran", "hello world and more words here"]
    total, count = 0.0, 0
    for t in texts:
        tokens = tiny.to_tokens(t)
        with torch.no_grad():
            loss = float(tiny(tokens, return_type="loss"))
        total += loss * (tokens.shape[1] - 1)
        count += tokens.shape[1] - 1
    assert lm_loss(tiny, texts, batch_size=2) == pytest.approx(total / count, rel=1e-5)


def test_ablation_hook_sets_the_neuron(tiny: Any) -> None:
    name, hook = _ablation_hook(tiny, 1, 5, 0.25)
    with tiny.hooks(fwd_hooks=[(name, hook)]):
        _, cache = tiny.run_with_cache("a cat sat", names_filter=[name])
    assert torch.all(cache[name][0, :, 5] == 0.25)
    assert lm_loss(tiny, ["a cat sat on the mat"], hooks=[(name, hook)]) != lm_loss(
        tiny, ["a cat sat on the mat"]
    )


def _word_dataset() -> FeatureDataset:
    pos = [f"the {w} cat sat here" for w in ("big", "old", "red", "sad", "fat", "shy")] * 4
    neg = [f"the {w} dog ran off" for w in ("big", "old", "red", "sad", "fat", "shy")] * 4
    return FeatureDataset(
        name="cat",
        texts=tuple(pos + neg),
        labels=torch.tensor([1] * len(pos) + [0] * len(neg)),
        classes=("dog", "cat"),
        pooling="max",
        groups=None,
        source="test",
    )


def test_classify_neurons_on_a_tiny_model(tiny: Any, tmp_path: Path) -> None:
    ds = _word_dataset()
    broad = ["one two three four", "a quiet evening by the sea", "numbers 1 2 3"]
    report = classify_neurons(
        tiny, [ds], broad_texts=broad, top=10, progress=False, n_ablation_texts=4
    )
    assert report.features == ("cat",)
    assert report.best_f1.shape == (1, tiny.cfg.n_layers)
    # best_f1 per layer == the best of explicit single-neuron probes on the same split
    acts = collect_activations(tiny, ds, pooling="max", progress=False)
    y = ds.labels == 1
    train, test = split_indices(y, split="stratified")
    for layer in range(tiny.cfg.n_layers):
        X = acts[layer].double()
        order = torch.argsort(neuron_scores(X[train], y[train], "mean_diff"), descending=True)
        top = order[:10].tolist()
        best = top[int(np.argmax([_sk_f1(X[:, [n]], y, train, train) for n in top]))]
        ref = _sk_f1(X[:, [best]], y, train, test)
        assert float(report.best_f1[0, layer]) == pytest.approx(ref, abs=1e-9)
    v = report.verdict("cat")
    assert v.verdict in (
        "monosemantic candidate",
        "superposition",
        "distributed",
        "not decodable",
        "unverified single neuron",
    )
    assert np.isfinite(v.loss_rise_feature) and 0 <= v.broad_fire_rate <= 1
    assert v.prune_f1.shape == (11,)
    assert "k=1 F1" in v.reason
    path = report.report(tmp_path / "r.html")
    assert "Verdicts" in path.read_text()
    report.save(tmp_path / "r.pt")
    back = NeuronReport.load(tmp_path / "r.pt")
    assert back.verdict("cat").neuron == v.neuron
    frame = report.to_frame()
    assert list(frame["feature"]) == ["cat"]


def test_views(tiny: Any) -> None:
    page = neuron_activations_html(tiny, ["a cat sat", "the dog"], [(0, 3), (2, 7)])
    assert "L2N7" in page and "<script" in page
    acts = collect_activations(tiny, ["a cat sat on the mat"], pooling="none", progress=False)
    top = top_activating_tokens(acts, 1, 4, tiny.tokenizer, n=3)
    col = acts[1][:, 4]
    assert [v for _, v in top] == pytest.approx(sorted(col.tolist(), reverse=True)[:3])


def test_bad_inputs(tiny: Any) -> None:
    with pytest.raises(Exception, match="broad_texts is empty"):
        classify_neurons(tiny, [_word_dataset()], broad_texts=[], progress=False)
    with pytest.raises(Exception, match="no neurons"):
        neuron_activations_html(tiny, ["a"], [])


@pytest.mark.bundled
def test_smollm2_has_a_french_neuron(smollm2: Any) -> None:
    """Gurnee et al. find French neurons at F1 1.0 in Pythia-70M; SmolLM2 has one early too.

    (`demos/sparse_probing.py` over all 30 layers finds it at layer 3; this checks layers 2-4.)
    """
    ds = language_identity(n_per_language=30, languages=["fr", "en", "de", "it", "es"])
    report = classify_neurons(
        smollm2,
        {"language": ds},
        broad_texts=broad_text(n=4),
        layers=[2, 3, 4],
        top=10,
        n_ablation_texts=4,
        progress=False,
    )
    fr = report.verdict("language:fr")
    assert fr.f1_k1 >= 0.9
    assert fr.loss_rise_feature > fr.loss_rise_broad  # ablating it hurts French text more


def test_verdict_rules() -> None:
    from mechlin.neurons.verdicts import _verdict

    def verdict(f1: float, by_k: list[float], prune_last: float, fire: float, rise: float) -> str:
        return _verdict(
            "f", 1, 2, f1, torch.tensor(by_k, dtype=torch.float64),
            torch.tensor([f1, prune_last], dtype=torch.float64), 0.0, fire, rise, 0.0,
            mono_f1=0.9, gain_min=0.1, max_fire_rate=0.05,
        ).verdict  # fmt: skip

    # a good single neuron is decodable even when the mean-difference top-k probes are weak
    assert verdict(0.89, [0.5, 0.4], 0.3, 0.5, 0.0) != "not decodable"
    assert verdict(0.5, [0.5, 0.55], 0.3, 0.5, 0.0) == "not decodable"
    assert verdict(0.95, [0.95, 0.96], 0.3, 0.01, 0.01) == "monosemantic candidate"
    assert verdict(0.95, [0.95, 0.96], 0.3, 0.20, 0.01) == "unverified single neuron"
    assert verdict(0.70, [0.70, 0.90], 0.3, 0.20, 0.01) == "superposition"
    assert verdict(0.80, [0.80, 0.85], 0.78, 0.20, 0.01) == "distributed"


def _fake_report(n_features: int) -> NeuronReport:
    from mechlin.neurons.verdicts import _verdict

    g = torch.Generator().manual_seed(n_features)
    verdicts = tuple(
        _verdict(
            f"feature {i}", 1, i, 0.7, torch.rand(8, generator=g, dtype=torch.float64),
            torch.rand(11, generator=g, dtype=torch.float64), 0.0, 0.1, 0.0, 0.0,
            mono_f1=0.9, gain_min=0.1, max_fire_rate=0.05,
        )
        for i in range(n_features)
    )  # fmt: skip
    return NeuronReport(
        features=tuple(v.feature for v in verdicts),
        layers=(0, 1),
        best_f1=torch.rand(n_features, 2, generator=g, dtype=torch.float64),
        best_neuron=torch.zeros(n_features, 2, dtype=torch.long),
        verdicts=verdicts,
        polysemantic=(),
    )


@pytest.mark.parametrize("n_features", [3, 20])
def test_plot_sweeps_lines_for_few_features_heatmaps_for_many(n_features: int) -> None:
    from mechlin import viz
    from mechlin.neurons.verdicts import SWEEP_LINES

    report = _fake_report(n_features)
    fig = report.plot_sweeps()
    try:
        by_k, prune = fig.axes[:2]
        if n_features <= SWEEP_LINES:  # one line per feature, no image
            assert len(by_k.lines) == len(prune.lines) == n_features and not by_k.images
            assert [t.get_text() for t in by_k.get_legend().get_texts()] == list(report.features)
            return
        assert not by_k.lines and not prune.lines
        for ax, width, values in ((by_k, 8, "f1_by_k"), (prune, 11, "prune_f1")):
            (image,) = ax.images
            grid = np.asarray(image.get_array())
            assert grid.shape == (n_features, width)  # features x k, features x removed
            expected = torch.stack([getattr(v, values) for v in report.verdicts]).numpy()
            np.testing.assert_allclose(grid, expected)
            labels = [t.get_text() for t in ax.get_yticklabels()]
            assert labels == list(report.features)
    finally:
        viz.close(fig)
