"""Context (final hidden state) directions vs unembedding directions on real and tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from mechlin import viz
from mechlin.directions import concept_directions
from mechlin.errors import ArgumentError, EmptyInputError, NotSupportedError
from mechlin.origins import (
    EmbeddingUnembeddingAlignment,
    alignment_report,
    default_contexts,
    embedding_unembedding_alignment,
    language_contexts,
    reproduce_alignment,
    word_contexts,
)

CONTEXTS = {
    "a": (["The city of Paris is", "The capital of France"], ["The Space Needle", "Big Ben is in"]),
    "b": (["Miles Davis plays the"], ["The currency of Japan", "The official language of"]),
    "z": (["The Colosseum is"], ["Toko Yasuda plays"]),  # no unembedding direction: rows only
}


@pytest.fixture(scope="module")
def tiny_dirs(tiny):
    return concept_directions(
        tiny,
        {"a": [(10, 20), (11, 21), (12, 22)], "b": [(30, 40), (31, 41)], "c": [(50, 60), (51, 61)]},
    )


def _lambda(model, texts):
    out = []
    for text in texts:
        _, cache = model.run_with_cache(model.to_tokens(text), names_filter=["unembed.hook_in"])
        out.append(cache["unembed.hook_in"][0, -1].double())
    return torch.stack(out)


def test_alignment_matrix_equals_a_direct_computation(tiny, tiny_dirs) -> None:
    res = embedding_unembedding_alignment(tiny, tiny_dirs, CONTEXTS)
    assert res.alignment.shape == (3, 3)
    assert res.context_concepts == ("a", "b", "z") and res.unembed_concepts == ("a", "b", "c")
    expected_matched = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    assert torch.equal(res.matched, expected_matched)
    assert res.n_contexts.tolist() == [[2, 2], [1, 2], [1, 1]]
    for r, name in enumerate(res.context_concepts):
        base, target = CONTEXTS[name]
        delta = _lambda(tiny, target).mean(0) - _lambda(tiny, base).mean(0)
        white = delta @ tiny_dirs.cov_sqrt  # whitened hidden-state difference
        for c in range(3):
            cos = white @ tiny_dirs.unit[c] / white.norm()
            assert res.alignment[r, c].item() == pytest.approx(cos.item(), abs=1e-6)
    assert res.matched_values.shape == (2,) and res.mismatched_values.shape == (7,)
    assert res.mismatched_mean_abs == pytest.approx(res.mismatched_values.abs().mean().item())


def test_alignment_result_contract(tiny, tiny_dirs, tmp_path) -> None:
    res = embedding_unembedding_alignment(tiny, tiny_dirs, CONTEXTS)
    assert "matched cosine" in res.summary() and "causal" in res.summary()
    assert len(res.to_frame()) == 9
    viz.close(res.plot())
    back = EmbeddingUnembeddingAlignment.load(res.save(tmp_path / "a.pt"))
    assert torch.equal(back.alignment, res.alignment)
    euclid = embedding_unembedding_alignment(
        tiny,
        {"a": [(10, 20), (11, 21)], "b": [(30, 40), (31, 41)]},
        CONTEXTS,
        inner_product="euclidean",
    )
    assert euclid.inner_product == "euclidean"


def test_alignment_bad_input(tiny, tiny_dirs) -> None:
    with pytest.raises(EmptyInputError, match="no concepts"):
        embedding_unembedding_alignment(tiny, [], CONTEXTS)
    with pytest.raises(EmptyInputError, match="both classes"):
        embedding_unembedding_alignment(tiny, tiny_dirs, {"a": (["The city of Paris"], [])})
    with pytest.raises(EmptyInputError, match="contexts is empty"):
        embedding_unembedding_alignment(tiny, tiny_dirs, {})
    with pytest.raises(ArgumentError, match="nothing to match"):
        embedding_unembedding_alignment(tiny, tiny_dirs, {"z": CONTEXTS["z"]})
    with pytest.raises(EmptyInputError):
        word_contexts([])


def test_context_builders() -> None:
    base, target = word_contexts([("king", "queen")], templates=("Say {w}. Say",))
    assert base == ["Say king. Say"] and target == ["Say queen. Say"]
    en, fr = language_contexts(n=5, n_words=4)
    assert len(en) == len(fr) == 5 and all(len(t.split()) <= 4 for t in en + fr)


@pytest.mark.bundled
def test_smollm2_matched_concepts_align_more_than_mismatched(smollm2) -> None:
    names = ["male -> female", "noun -> plural", "lower -> upper"]
    dirs = concept_directions(smollm2, names)
    pairs = {
        n: [p for p, k in zip(dirs.pair_words, dirs.pair_concept.tolist(), strict=True) if k == c][
            :6
        ]
        for c, n in enumerate(dirs.names)
    }
    contexts = {
        n: word_contexts(p, templates=("Word: {w}. Word: {w}. Word:",)) for n, p in pairs.items()
    }
    res = embedding_unembedding_alignment(smollm2, dirs, contexts)
    assert res.matched_values.min() > res.mismatched_values.abs().max()


# --- statistics: permutation baseline and bootstrap intervals ---------------------------------

TEXTS = [
    "The city of Paris is",
    "The capital of France",
    "The Space Needle",
    "Big Ben is in",
    "Miles Davis plays the",
    "The currency of Japan",
    "The official language of",
    "The Colosseum is",
    "Toko Yasuda plays",
    "A cat sat on the",
    "The dog ran away from",
    "Water boils at",
]
# four concepts with contexts and unembedding directions, and a row without a column
STAT_PAIRS = {
    "a": [(10, 20), (11, 21), (12, 22)],
    "b": [(30, 40), (31, 41), (32, 42)],
    "c": [(50, 60), (51, 61)],
    "d": [(70, 80), (71, 81), (72, 82), (73, 83)],
}
STAT_CONTEXTS = {
    "a": (TEXTS[0:4], TEXTS[4:7]),
    "b": (TEXTS[7:9], TEXTS[9:12]),
    "c": (TEXTS[2:5], TEXTS[8:12]),
    "d": (TEXTS[5:6], TEXTS[0:3]),
    "z": (TEXTS[9:10], TEXTS[3:4]),
}
N_PERM, N_BOOT, SEED = 300, 40, 7
EPS = torch.finfo(torch.float64).eps


@pytest.fixture(scope="module")
def stat_dirs(tiny):
    return concept_directions(tiny, STAT_PAIRS)


@pytest.fixture(scope="module")
def stat_res(tiny, stat_dirs):
    return embedding_unembedding_alignment(
        tiny, stat_dirs, STAT_CONTEXTS, n_permutations=N_PERM, n_bootstrap=N_BOOT, seed=SEED
    )


def _quantile(values: list[float], p: float) -> float:
    """Linear interpolation between order statistics (numpy's and torch's default)."""
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def _reference_lambda(model, contexts):
    """The same activations the analysis reads (collect_activations, float64), per row."""
    from mechlin.neurons import collect_activations

    texts = [t for base, target in contexts.values() for t in (*base, *target)]
    acts = collect_activations(
        model,
        texts,
        hooks=["unembed.hook_in"],
        pooling="last",
        progress=False,
        batch_size=16,
        dtype=torch.float64,
    )["unembed.hook_in"].double()
    out, i = {}, 0
    for name, (base, target) in contexts.items():
        out[name] = (acts[i : i + len(base)], acts[i + len(base) : i + len(base) + len(target)])
        i += len(base) + len(target)
    return out


def _cos(u, v) -> float:
    return float(u @ v) / (float(u.norm()) * float(v.norm()))


def test_permutation_baseline_equals_a_reference_loop(stat_res) -> None:
    """Permute the column labels one ``randperm`` at a time; average the matched cells by hand."""
    a, m = stat_res.alignment.tolist(), stat_res.matched.tolist()
    cells = [(r, c) for r in range(len(m)) for c in range(len(m[0])) if m[r][c]]
    observed = sum(a[r][c] for r, c in cells) / len(cells)
    g = torch.Generator().manual_seed(SEED)
    permuted = []
    for _ in range(N_PERM):
        perm = torch.randperm(len(m[0]), generator=g).tolist()
        permuted.append(sum(a[r][perm[c]] for r, c in cells) / len(cells))
    ties = sum(abs(p - observed) <= 1e-12 for p in permuted)  # identity-like permutations
    assert ties > 0  # 4 columns: about N_PERM / 24 permutations fix every matched column
    hits = sum(p >= observed - 1e-12 for p in permuted)
    tol = 64 * EPS
    assert stat_res.matched_mean == pytest.approx(observed, abs=tol)
    assert stat_res.n_permutations == N_PERM
    assert stat_res.permuted_matched_means.tolist() == pytest.approx(permuted, abs=tol)
    assert stat_res.p_value == pytest.approx((1 + hits) / (1 + N_PERM), abs=tol)
    assert stat_res.permutation_mean == pytest.approx(sum(permuted) / N_PERM, abs=tol)
    lo, hi = stat_res.permutation_interval
    assert lo == pytest.approx(_quantile(permuted, 0.025), abs=tol)
    assert hi == pytest.approx(_quantile(permuted, 0.975), abs=tol)


def test_bootstrap_intervals_equal_a_reference_loop(tiny, stat_dirs, stat_res) -> None:
    """Resample by index lists, in the documented order of draws, one resample at a time."""
    lam = _reference_lambda(tiny, STAT_CONTEXTS)
    names, cols = list(STAT_CONTEXTS), list(stat_dirs.names)
    sqrt, inv_sqrt = stat_dirs.cov_sqrt, stat_dirs.cov_inv_sqrt
    w_u = tiny.W_U.detach().double()
    pair_diffs = {  # whitened g(y1) - g(y0) of each pair, per concept
        n: [(w_u[:, t] - w_u[:, b]) @ inv_sqrt for b, t in STAT_PAIRS[n]] for n in cols
    }
    g = torch.Generator().manual_seed(SEED)
    for _ in range(N_PERM):  # the permutations come first
        torch.randperm(len(cols), generator=g)
    base_idx = [torch.randint(len(lam[n][0]), (N_BOOT, len(lam[n][0])), generator=g) for n in names]
    target_idx = [
        torch.randint(len(lam[n][1]), (N_BOOT, len(lam[n][1])), generator=g) for n in names
    ]
    pair_idx = [
        torch.randint(len(STAT_PAIRS[n]), (N_BOOT, len(STAT_PAIRS[n])), generator=g) for n in cols
    ]
    cells: dict[tuple[int, int], list[float]] = {}
    matched_means, mismatched_means = [], []
    for k in range(N_BOOT):
        matched, mismatched = [], []
        for r, n in enumerate(names):
            base, target = lam[n]
            row = (
                sum(target[i] for i in target_idx[r][k].tolist()) / len(target)
                - sum(base[i] for i in base_idx[r][k].tolist()) / len(base)
            ) @ sqrt
            for c, col in enumerate(cols):
                direction = sum(pair_diffs[col][i] for i in pair_idx[c][k].tolist())
                cos = _cos(row, direction)
                cells.setdefault((r, c), []).append(cos)
                (matched if n == col else mismatched).append(cos)
        matched_means.append(sum(matched) / len(matched))
        mismatched_means.append(sum(abs(x) for x in mismatched) / len(mismatched))
    tol = 1e-12  # float64 products of 64-wide whitened vectors, summed in another order
    # basic intervals: the quantiles reflected about the estimate, (2 est - q97.5, 2 est - q2.5)
    lo, hi = stat_res.alignment_interval
    for (r, c), values in cells.items():
        est = float(stat_res.alignment[r, c])
        assert float(lo[r, c]) == pytest.approx(2 * est - _quantile(values, 0.975), abs=tol)
        assert float(hi[r, c]) == pytest.approx(2 * est - _quantile(values, 0.025), abs=tol)
    assert stat_res.n_bootstrap == N_BOOT
    m_lo, m_hi = stat_res.matched_mean_interval
    est = stat_res.matched_mean
    assert m_lo == pytest.approx(2 * est - _quantile(matched_means, 0.975), abs=tol)
    assert m_hi == pytest.approx(2 * est - _quantile(matched_means, 0.025), abs=tol)
    x_lo, x_hi = stat_res.mismatched_mean_abs_interval
    est = stat_res.mismatched_mean_abs
    assert x_lo == pytest.approx(2 * est - _quantile(mismatched_means, 0.975), abs=tol)
    assert x_hi == pytest.approx(2 * est - _quantile(mismatched_means, 0.025), abs=tol)
    bias = sum(matched_means) / N_BOOT - stat_res.matched_mean
    assert stat_res.matched_mean_bias == pytest.approx(bias, abs=tol)


def test_intervals_contain_the_point_estimates_of_weakly_aligned_cells(stat_res) -> None:
    """On the random tiny model every cosine is small, where resampling noise barely biases a
    cosine, so each interval holds its estimate (on trained models strongly aligned
    cells can fall outside: the module docstring's pitfall; see the smollm2 test)."""
    lo, hi = stat_res.alignment_interval
    tol = 1e-12  # a cell whose resamples often equal the data sits on its own bound
    assert bool((lo <= hi).all())
    assert bool(((lo - tol <= stat_res.alignment) & (stat_res.alignment <= hi + tol)).all())
    m_lo, m_hi = stat_res.matched_mean_interval
    assert m_lo <= stat_res.matched_mean <= m_hi
    x_lo, x_hi = stat_res.mismatched_mean_abs_interval
    assert x_lo <= stat_res.mismatched_mean_abs <= x_hi
    p_lo, p_hi = stat_res.permutation_interval
    assert p_lo <= stat_res.permutation_mean <= p_hi
    assert 1 / (1 + N_PERM) <= stat_res.p_value <= 1


def test_statistics_are_seeded_and_shown(tiny, stat_dirs, stat_res) -> None:
    again = embedding_unembedding_alignment(
        tiny, stat_dirs, STAT_CONTEXTS, n_permutations=N_PERM, n_bootstrap=N_BOOT, seed=SEED
    )
    for field in ("alignment_interval", "bootstrap_matched_means", "permuted_matched_means"):
        assert torch.equal(getattr(again, field), getattr(stat_res, field))  # same computation
    other = embedding_unembedding_alignment(
        tiny, stat_dirs, STAT_CONTEXTS, n_permutations=N_PERM, n_bootstrap=N_BOOT, seed=SEED + 1
    )
    assert not torch.equal(other.permuted_matched_means, stat_res.permuted_matched_means)
    assert torch.equal(other.alignment, stat_res.alignment)  # the estimate draws nothing
    text = stat_res.summary()
    assert "permutation baseline" in text and "p = " in text and "bootstrap" in text
    frame = stat_res.to_frame()
    assert {"cosine_low", "cosine_high"} <= set(frame.columns)
    assert frame.attrs["p_value"] == stat_res.p_value
    assert frame.attrs["n_concepts"] == 4 and set(frame.attrs["matched_cosines"]) == set("abcd")
    fig = stat_res.plot()
    assert "permuted" in fig.axes[0].get_title()
    viz.close(fig)


def test_statistics_survive_save_and_load(stat_res, tmp_path) -> None:
    back = EmbeddingUnembeddingAlignment.load(stat_res.save(tmp_path / "s.pt"))
    for field in (
        "alignment",
        "alignment_interval",
        "bootstrap_matched_means",
        "bootstrap_mismatched_mean_abs",
        "permuted_matched_means",
    ):
        assert torch.equal(getattr(back, field), getattr(stat_res, field))
    assert back.seed == SEED and back.summary() == stat_res.summary()


def test_a_file_without_statistics_still_loads(stat_res, tmp_path) -> None:
    """Files written before the statistics: the fields read as None and are left out."""
    path = stat_res.save(tmp_path / "old.pt")
    data = torch.load(path, weights_only=True)
    for field in (
        "alignment_interval",
        "bootstrap_matched_means",
        "bootstrap_mismatched_mean_abs",
        "permuted_matched_means",
        "seed",
    ):
        del data[field]
    torch.save(data, path)
    old = EmbeddingUnembeddingAlignment.load(path)
    assert not old.has_statistics and old.permuted_matched_means is None
    assert "permutation" not in old.summary() and "matched cosine" in old.summary()
    assert old.to_frame()["cosine_low"].isna().all()
    with pytest.raises(NotSupportedError, match="rerun embedding_unembedding_alignment"):
        _ = old.p_value
    viz.close(old.plot())


def test_statistics_bad_arguments(tiny, tiny_gemma, stat_dirs) -> None:
    for bad in ({"n_permutations": 0}, {"n_bootstrap": 0}, {"n_bootstrap": 2.5}, {"seed": -1}):
        with pytest.raises(ArgumentError, match=next(iter(bad))):
            embedding_unembedding_alignment(tiny, stat_dirs, STAT_CONTEXTS, **bad)
    with pytest.raises(ArgumentError, match="do not follow from their pairs"):
        embedding_unembedding_alignment(tiny_gemma, stat_dirs, STAT_CONTEXTS, n_bootstrap=2)
    with pytest.raises(EmptyInputError, match="no inner products"):
        reproduce_alignment(tiny, inner_products=())


SMOL_CONCEPTS = [
    "male -> female",
    "noun -> plural",
    "lower -> upper",
    "verb -> Ving",
    "verb -> Ved",
    "adj -> comparative",
    "country -> capital",
    "thing -> color",
]


@pytest.mark.bundled
def test_smollm2_alignment_beats_its_permutation_baseline(smollm2) -> None:
    causal, euclid = reproduce_alignment(
        smollm2, SMOL_CONCEPTS, max_pairs=6, n_permutations=200, n_bootstrap=100
    )
    assert (causal.inner_product, euclid.inner_product) == ("causal", "euclidean")
    assert torch.equal(causal.n_contexts, euclid.n_contexts)  # the same contexts for both
    for res in (causal, euclid):
        assert res.matched_mean > res.permutation_interval[1]
        assert res.p_value < 0.05  # 8! permutations: the identity is rarely drawn
        # the documented pitfall: resampling shrinks aligned cosines, and the basic interval,
        # corrected for it, lies above the observed matched mean, clear of the null
        assert res.matched_mean_bias < 0
        assert res.matched_mean_interval[0] > res.permutation_interval[1]
    # one forward pass for both: the same numbers as the one-inner-product call
    dirs = concept_directions(smollm2, list(causal.unembed_concepts))
    contexts = default_contexts(dirs, max_pairs=6)
    single = embedding_unembedding_alignment(
        smollm2, dirs, contexts, n_permutations=200, n_bootstrap=100
    )
    tol = 1e-9  # the same float64 arithmetic on the same activations
    assert torch.allclose(single.alignment, causal.alignment, rtol=0, atol=tol)
    assert torch.allclose(single.alignment_interval, causal.alignment_interval, rtol=0, atol=tol)
    assert single.p_value == pytest.approx(causal.p_value, abs=tol)


@pytest.mark.bundled
def test_alignment_report_writes_both_inner_products(tmp_path) -> None:
    path = tmp_path / "alignment.json"
    report = alignment_report(
        ["smollm2-135m"],
        path,
        concepts=SMOL_CONCEPTS[:3],
        max_pairs=4,
        n_permutations=50,
        n_bootstrap=20,
    )
    assert json.loads(path.read_text()) == report
    entry = report["models"]["smollm2-135m"]
    assert entry["concepts"] == SMOL_CONCEPTS[:3]
    for ip in ("causal", "euclidean"):
        stats = entry[ip]
        assert stats["inner_product"] == ip and stats["n_concepts"] == 3
        assert stats["n_permutations"] == 50 and stats["n_bootstrap"] == 20
        for key in ("matched_mean_interval", "permutation_interval", "p_value"):
            assert key in stats
