"""cognition_vs_expression: bookkeeping, correlations against scipy, report, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scipy import stats

import mechlin
from mechlin.cognition.comparison import CognitionExpression, cognition_vs_expression
from mechlin.cognition.expression import expression_scores
from mechlin.cognition.probes import probe_cognition
from mechlin.datasets.mcq import load_mcq
from mechlin.errors import EmptyInputError, NotInResultError, OutOfRangeError


def _short(name: str, n: int, limit: int = 90) -> object:
    ds = load_mcq(name)
    keep = [i for i, it in enumerate(ds) if len(it.question) + sum(map(len, it.choices)) < limit]
    return ds.subset(keep[:n])


@pytest.fixture(scope="module")
def result(tiny: object, tiny_no_bos: object) -> CognitionExpression:
    models = {"a": tiny, "b": tiny_no_bos, "c": mechlin.tiny_model(seed=5)}
    return cognition_vs_expression(
        models,
        [_short("arc_easy", 12), _short("openbookqa", 12)],
        shots=(0, 1),
        shot_pool=_short("arc_easy_test", 30, limit=60),
        pass_k=(1, 4),
        n_samples=6,
        pca_dim=4,
        progress=False,
    )


def test_cells_equal_the_single_analyses(result: CognitionExpression, tiny: object) -> None:
    ds = _short("openbookqa", 12)
    p = probe_cognition(tiny, ds, pca_dim=4, progress=False)
    assert result.probe("a", "openbookqa").cognition == p.cognition
    assert float(result.cognition[0, 1]) == pytest.approx(p.cognition)
    e = expression_scores(tiny, ds, n_samples=6, progress=False)
    assert float(result.expression("letter")[0, 1]) == pytest.approx(e.letter_acc)
    assert float(result.expression("pass@4")[0, 1]) == pytest.approx(e.pass_at(4))
    torch.testing.assert_close(result.gap("acc"), result.cognition - result.expression("acc"))


def test_correlation_equals_scipy(result: CognitionExpression) -> None:
    x = result.cognition.flatten().double().numpy()
    y = result.expression("acc", 1).flatten().double().numpy()
    c = result.correlation("acc", 1)
    if x.std() > 0 and y.std() > 0:
        assert c["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic)
        assert c["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert c["n"] == 6
    one = result.correlation("letter", dataset="arc_easy")
    assert one["n"] == 3


def test_views_save_and_report(result: CognitionExpression, tmp_path: Path) -> None:
    frame = result.to_frame()
    assert len(frame) == 3 * 2 * 2 * len(result.metric_names)
    assert "cognition" in result.summary()
    fig = result.plot()
    assert len(fig.axes) >= 4
    mechlin.viz.close(fig)
    back = CognitionExpression.load(result.save(tmp_path / "r.pt"))
    torch.testing.assert_close(back.cognition, result.cognition)
    page = result.report(tmp_path / "r.html")
    assert "Cognition vs expression" in page.read_text()
    with pytest.raises(NotInResultError):
        result.expression("letter", shots=5)
    with pytest.raises(NotInResultError):
        result.expression("bleu")


def test_directories_load_and_resume(tiny: object, tmp_path: Path) -> None:
    from mechlin.tiny import tiny_hf_model, tiny_tokenizer

    # the plain Hugging Face model behind `tiny` (a booted bridge's modules are wrapped)
    tiny_hf_model(seed=0).save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer().save_pretrained(tmp_path / "ckpt")
    ds = _short("arc_easy", 8)
    kw = dict(pass_k=(), pca_dim=3, progress=False, out=tmp_path / "run")
    first = cognition_vs_expression({"obj": tiny, "dir": str(tmp_path / "ckpt")}, ds, **kw)
    torch.testing.assert_close(first.cognition[0], first.cognition[1])
    torch.testing.assert_close(first.expression("acc")[0], first.expression("acc")[1])
    again = cognition_vs_expression({"obj": tiny, "dir": str(tmp_path / "ckpt")}, ds, **kw)
    torch.testing.assert_close(first.cognition, again.cognition)
    assert (tmp_path / "run" / "dir" / "arc_easy" / "expression_0shot" / "store.json").exists()


def test_bad_inputs(tiny: object) -> None:
    ds = _short("arc_easy", 6)
    with pytest.raises(EmptyInputError, match="models is empty"):
        cognition_vs_expression({}, ds)
    with pytest.raises(OutOfRangeError, match="k=8"):
        cognition_vs_expression({"a": tiny}, ds, pass_k=(8,), n_samples=4)
    with pytest.raises(EmptyInputError, match="1 item"):
        cognition_vs_expression({"a": tiny}, ds.subset([0]), progress=False)
