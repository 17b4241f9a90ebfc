"""Causal tracing (Meng et al. 2022, ROME): where in (layer x token) a model carries a fact.

Three runs of a factual prompt. *Clean*: as is. *Corrupted*: Gaussian noise N(0, nu) added to
the token embeddings of every subject token (nu = 3 x the embedding std of subject tokens,
``embedding_std``), or, with ``corrupted_prompt=``, the prompt with another subject of the same
token length (symmetric token replacement, Zhang & Nanda 2023). *Restored*: the corrupted run
with one state set back to its clean value. ``kind="resid"`` restores one hidden state
(ROME's h_l, TransformerLens ``blocks.{l}.hook_resid_post``) at one token; ``"mlp"`` and
``"attn"`` restore the sublayer outputs at one token over a window of layers around l: ROME's
code takes ``[l - window//2, l + window - window//2)`` clipped to the model, i.e. [l-5, l+4]
for window 10 (the paper's text says [l-4, l+5]). The score of a cell is the metric of the
answer token at the last position, averaged over the noise samples; the same seeded noise is
used for the corrupted baseline and for every cell (common random numbers).

Indirect effect IE(l, t) = score(l, t) - corrupt_score; total effect TE = clean_score -
corrupt_score (the scores are probabilities for ``metric="prob"``, else log-probs or logit
differences).

Why it is fast: the clean run happens once; a restoration at (l, t) cannot change layers below
the first restored layer nor positions before t, so each cell reruns only those layers at those
positions (the other keys and values come from the cached corrupted run,
``mechlin.recall._replay``), many cells and noise samples share each batch (rows join the batch
at the layer where their restoration starts), and only the last position is unembedded. Models
whose layers cannot be replayed fall back to packing many cells into each full forward pass.
Both paths are tested against ``tests/reference/causal_trace_ref.py``, one plain forward per
cell.

Pitfalls: probabilities saturate, so also look at ``metric="logprob"``
or ``"logit_diff"``; noise and token replacement can localize differently; BOS shifts every
position (positions here are those of ``model.to_tokens``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mechlin import sites, support, viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.datasets.facts import load_known_1000
from mechlin.errors import ArgumentError, EmptyInputError
from mechlin.recall._engines import (
    Kind,
    Metric,
    PackedEngine,
    ReplayEngine,
    TraceEngine,
    TraceSetup,
    last_position_hook,
    metric_of_logits,
)
from mechlin.recall._replay import replay_supported
from mechlin.results import Result
from mechlin.tokens import answer_tokens, check_positions, find_subject_span, input_device

_SITE: dict[str, sites.LayerSite] = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}


@dataclass(frozen=True)
class CausalTrace(Result):
    """Scores of restoring each (layer, position) state of a corrupted run."""

    scores: Float[Tensor, "n_layers pos"]  # the metric with that state (window) restored
    clean_score: float  # the metric on the clean run (a probability for metric="prob")
    corrupt_score: float  # the metric on the corrupted run
    tokens: tuple[str, ...]  # the prompt's tokens, as the model reads them
    subject_span: tuple[int, int]  # [start, end) token positions
    kind: str  # "resid" | "mlp" | "attn"
    window: int
    noise_level: float | None  # nu; None in corrupted-prompt mode
    answer: str  # the scored token
    answer_id: int
    answer_is_multi_token: bool  # the given answer was several tokens: its first is scored
    metric: str
    layers: tuple[int, ...]  # layer of each row of ``scores``
    positions: tuple[int, ...]  # position of each column of ``scores``
    n_samples: int
    corrupted_prompt: str | None = None
    contrast_id: int | None = None  # logit_diff: the token the answer is compared with

    def __post_init__(self) -> None:
        if tuple(self.scores.shape) != (len(self.layers), len(self.positions)):
            raise ArgumentError(
                f"scores has shape {tuple(self.scores.shape)}, expected "
                f"({len(self.layers)}, {len(self.positions)}) for the layers and positions"
            )

    _renamed: ClassVar[dict[str, str]] = {"p_clean": "clean_score", "p_corrupt": "corrupt_score"}

    @property
    def p_clean(self) -> float:
        """Deprecated name of ``clean_score`` (it is a probability only for metric="prob")."""
        return self.clean_score

    @property
    def p_corrupt(self) -> float:
        """Deprecated name of ``corrupt_score``."""
        return self.corrupt_score

    @property
    def indirect_effect(self) -> Float[Tensor, "n_layers pos"]:
        return self.scores - self.corrupt_score

    @property
    def total_effect(self) -> float:
        return self.clean_score - self.corrupt_score

    def to_frame(self) -> Any:
        """One row per (layer, position) with token, score and indirect effect."""
        import pandas as pd  # noqa: PLC0415

        rows = [
            {
                "layer": layer,
                "position": pos,
                "token": self.tokens[pos],
                "in_subject": self.subject_span[0] <= pos < self.subject_span[1],
                "score": float(self.scores[i, j]),
                "indirect_effect": float(self.scores[i, j] - self.corrupt_score),
            }
            for i, layer in enumerate(self.layers)
            for j, pos in enumerate(self.positions)
        ]
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """ROME's heatmap: tokens down, layers across, subject starred. Returns the figure."""
        fig, ax = viz.axes(ax, figsize=(6, 0.3 * len(self.positions) + 1.5))
        cmap = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}[self.kind]
        data = self.scores.T.float().numpy()
        img = ax.pcolor(data, cmap=cmap, vmin=min(self.corrupt_score, float(data.min())))
        ax.invert_yaxis()
        ax.set_yticks(np.arange(len(self.positions)) + 0.5)
        s0, s1 = self.subject_span
        ax.set_yticklabels(
            [self.tokens[p] + ("*" if s0 <= p < s1 else "") for p in self.positions], fontsize=8
        )
        ax.set_xticks(np.arange(0, len(self.layers), 5) + 0.5)
        ax.set_xticklabels([self.layers[i] for i in range(0, len(self.layers), 5)])
        what = {"resid": "single restored layer", "mlp": "MLP", "attn": "Attn"}[self.kind]
        window = "" if self.kind == "resid" else f" (window {self.window})"
        ax.set_xlabel(f"{what}{window} by layer")
        ax.set_title(
            f"Impact of restoring state after corrupted input: {self.answer!r}", fontsize=9
        )
        cb = fig.colorbar(img, ax=ax)
        cb.ax.set_title(f"{self.metric}({self.answer.strip()})", fontsize=8)
        fig.tight_layout()
        return fig

    def summary(self) -> str:
        """Kind, metric, clean and corrupted scores, the answer and the strongest cell."""
        note = " (first token of a multi-token answer)" if self.answer_is_multi_token else ""
        i, j = divmod(int(self.scores.argmax()), self.scores.shape[1])
        pos = self.positions[j]
        return (
            f"causal trace, kind={self.kind}, metric={self.metric}: clean "
            f"{self.clean_score:.4f}, corrupted {self.corrupt_score:.4f}, answer "
            f"{self.answer!r}{note}\nstrongest restoration: layer {self.layers[i]}, position "
            f"{pos} ({self.tokens[pos]!r}), indirect effect "
            f"{float(self.scores[i, j]) - self.corrupt_score:.4f}"
        )


# --- noise level --------------------------------------------------------------------------

_STD_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], float]] = (
    weakref.WeakKeyDictionary()
)


@checked
@torch.no_grad()
def embedding_std(model: Model, subjects: Sequence[str] | None = None) -> float:
    """ROME's noise scale: std of all embedding entries of the subject tokens.

    Each subject is tokenized on its own (no special tokens) and its token embeddings (the
    output of the embedding hook, so Gemma's sqrt(d_model) scale is included) are pooled; the
    result is the standard deviation of every entry. ``subjects=None`` uses the subjects of
    ``known_1000``, as ROME does. Cached per model and subject list.
    """
    if subjects is None:
        subjects = sorted({f.subject for f in load_known_1000()})
    key = tuple(subjects)
    if not key:
        raise EmptyInputError("no subjects given: embedding_std needs at least one subject")
    per_model = _STD_CACHE.setdefault(model, {})
    if key in per_model:
        return per_model[key]
    ids = [i for s in key for i in model.tokenizer(s, add_special_tokens=False)["input_ids"]]
    name = sites.hook_name(model, "embed")
    device = input_device(model)
    chunk = min(int(model.cfg.n_ctx), 2048)
    pieces = []
    for i in range(0, len(ids), chunk):
        row = torch.tensor([ids[i : i + chunk]], device=device)
        _, cache = model.run_with_cache(row, names_filter=[name], stop_at_layer=0)
        pieces.append(cache[name][0].double())
    std = float(torch.cat(pieces).std())
    per_model[key] = std
    return std


# --- the trace ------------------------------------------------------------------------------


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """ROME's window of sublayers restored for centre ``layer``: [l - w//2, l + w - w//2)."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def _cells(model: Model, kind: Kind, window: int, layers: Sequence[int]) -> list[tuple[int, range]]:
    """(centre layer, restored layers) per row of the result."""
    n = int(model.cfg.n_layers)
    if kind == "resid":
        return [(layer, range(layer, layer + 1)) for layer in layers]
    return [(layer, window_layers(layer, window, n)) for layer in layers]


@checked
@torch.no_grad()
def causal_trace(
    model: Model,
    prompt: str,
    subject: str,
    *,
    answer: str | None = None,
    kind: Kind = "resid",
    window: int = 10,
    noise: Literal["3sigma"] | float = "3sigma",
    n_samples: int = 10,
    seed: int = 0,
    corrupted_prompt: str | None = None,
    metric: Metric = "prob",
    positions: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    contrast: str | None = None,
    memory_budget: int = 1 << 30,
    method: Literal["auto", "replay", "packed"] = "auto",
) -> CausalTrace:
    """Trace where ``model`` carries the fact in ``prompt`` about ``subject``.

    Args:
        answer: the token to score; ``None`` scores the model's own clean top-1 token. An
            answer of several tokens is scored by its first token (``answer_is_multi_token``).
        kind: restore hidden states (``"resid"``), MLP outputs or attention outputs.
        window: layers restored together for ``"mlp"``/``"attn"`` (ROME: 10).
        noise: ``"3sigma"`` (3 x ``embedding_std(model)``) or the noise std itself.
        n_samples: noise samples, averaged (ROME: 10). Ignored with ``corrupted_prompt``.
        seed: seed of the noise (the same noise is used for every cell and the baseline).
        corrupted_prompt: symmetric token replacement instead of noise: a prompt with the
            same number of tokens (deterministic, one sample).
        metric: ``"prob"`` (ROME), ``"logprob"``, or ``"logit_diff"`` (answer minus
            ``contrast``; by default the corrupted run's own top token other than the answer).
        positions, layers: restrict the grid (default: every position and layer).
        memory_budget: bytes of activations per batch; larger batches are split.
        method: ``"replay"`` (rerun only the layers and positions a restoration can change),
            ``"packed"`` (many cells per full forward; any model), or ``"auto"``.
    """
    prep = prepare_trace(
        model,
        prompt,
        subject,
        answer=answer,
        kind=kind,
        window=window,
        noise=noise,
        n_samples=n_samples,
        seed=seed,
        corrupted_prompt=corrupted_prompt,
        metric=metric,
        positions=positions,
        layers=layers,
        contrast=contrast,
        method=method,
    )
    scores = prep.engine.row_scores(  # each noise sample's metric, averaged
        prep.setup,
        prep.site,
        prep.cells,
        prep.positions,
        prep.clean_states,
        metric,
        memory_budget,
    ).mean(-1)
    return prep.result(scores)


@dataclass(frozen=True)
class CorruptedGraph:
    """The corrupted run with its autograd graph (``prepare_trace(keep_graph=True)``): the
    attribution estimate differentiates the metric of these logits, so it needs no forward
    of its own."""

    logits: Tensor  # (rows, d_vocab): the corrupted rows' last-position logits
    activations: dict[str, Tensor]  # the site's hook name per layer -> its live activation


@dataclass
class PreparedTrace:
    """A trace with its clean and corrupted runs done: what every cell's restoration needs.

    ``causal_trace`` scores every cell with ``engine.row_scores`` (averaged over the rows);
    the attribution and adaptive traces (``mechlin.recall.attribution``, ``.adaptive``) reuse
    the same setup, so their exact cells are computed from the very same noise, baseline and
    clean states.
    """

    model: Model
    setup: TraceSetup
    engine: TraceEngine
    site: sites.LayerSite
    cells: list[tuple[int, range]]  # (centre layer, restored layers) per row
    layers: list[int]
    positions: list[int]
    clean_states: Tensor  # (layer, pos, d_model) at the site
    clean_score: float
    corrupt_score: float
    corrupt_rows: Tensor  # (rows,) the metric of each corrupted row (noise sample)
    tokens: tuple[str, ...]
    kind: str
    window: int
    noise_level: float | None
    answer_is_multi_token: bool
    metric: str
    n_rows: int
    corrupted_prompt: str | None
    graph: CorruptedGraph | None = None  # prepare_trace(keep_graph=True): for one backward

    def take_graph(self) -> CorruptedGraph | None:
        """The corrupted run's autograd graph, once (a backward frees it); then None."""
        graph, self.graph = self.graph, None
        return graph

    def result(self, scores: Tensor) -> CausalTrace:
        """The ``CausalTrace`` of these runs with the given (layer, position) scores."""
        return CausalTrace(**self.fields(scores))

    def fields(self, scores: Tensor) -> dict[str, Any]:
        """The ``CausalTrace`` fields of these runs with the given scores."""
        answer_id = self.setup.answer_id
        return dict(
            scores=scores.cpu(),
            clean_score=self.clean_score,
            corrupt_score=self.corrupt_score,
            tokens=self.tokens,
            subject_span=self.setup.span,
            kind=self.kind,
            window=self.window,
            noise_level=self.noise_level,
            answer=self.model.tokenizer.decode([answer_id]),
            answer_id=answer_id,
            answer_is_multi_token=self.answer_is_multi_token,
            metric=self.metric,
            layers=tuple(self.layers),
            positions=tuple(self.positions),
            n_samples=self.n_rows,
            corrupted_prompt=self.corrupted_prompt,
            contrast_id=self.setup.contrast_id,
        )


@torch.no_grad()
def prepare_trace(
    model: Model,
    prompt: str,
    subject: str,
    *,
    answer: str | None,
    kind: Kind,
    window: int,
    noise: Literal["3sigma"] | float,
    n_samples: int,
    seed: int,
    corrupted_prompt: str | None,
    metric: Metric,
    positions: Sequence[int] | None,
    layers: Sequence[int] | None,
    contrast: str | None,
    method: str,
    keep_graph: bool = False,
) -> PreparedTrace:
    """The clean run, the corruption and the corrupted baseline of ``causal_trace``.

    ``keep_graph=True`` (the attribution estimate's): the corrupted run records autograd and
    keeps its logits and the site's activations (``PreparedTrace.graph``), so the estimate
    needs no forward of its own. Its values are the same bit for bit (tests).
    """
    if kind not in _SITE:
        raise ArgumentError(f"kind must be 'resid', 'mlp' or 'attn', not {kind!r}")
    if metric not in ("prob", "logprob", "logit_diff"):
        raise ArgumentError(f"metric must be 'prob', 'logprob' or 'logit_diff', not {metric!r}")
    support.require(model, f"trace_{kind}")
    n_layers = int(model.cfg.n_layers)
    clean = model.to_tokens(prompt)
    n_pos = clean.shape[1]
    span = find_subject_span(model, prompt, subject)
    layers = (
        list(range(n_layers)) if layers is None else [sites.check_layer(model, x) for x in layers]
    )
    positions = list(range(n_pos)) if positions is None else check_positions(positions, n_pos)
    if not positions or not layers:
        raise EmptyInputError("positions and layers must not be empty")
    device = clean.device

    # Clean run: the clean states that restorations copy, and the last position's final state
    # (read out below, with the corrupted rows).
    site = _SITE[kind]
    names = [sites.hook_name(model, site, layer) for layer in range(n_layers)]
    final_name = sites.hook_name(model, "final_resid")
    with model.hooks(fwd_hooks=[last_position_hook(model)]):
        _, clean_cache = model.run_with_cache(
            clean, names_filter=[*names, final_name], return_type=None
        )
    clean_states = torch.stack([clean_cache[n][0] for n in names])  # (layer, pos, d_model)
    clean_final = clean_cache[final_name][:, -1]  # (1, d_model)
    answer_ids = None if answer is None else answer_tokens(model, answer)

    # Corruption.
    if corrupted_prompt is not None:
        corrupt = model.to_tokens(corrupted_prompt)
        if corrupt.shape != clean.shape:
            raise ArgumentError(
                f"corrupted_prompt has {corrupt.shape[1]} tokens but the prompt has {n_pos}: "
                "symmetric token replacement needs a subject of the same token length.\n"
                f"prompt:    {model.to_str_tokens(clean[0])}\n"
                f"corrupted: {model.to_str_tokens(corrupt[0])}"
            )
        noise_tensor, nu, n_rows = None, None, 1
    else:
        nu = 3 * embedding_std(model) if noise == "3sigma" else float(noise)
        gen = torch.Generator().manual_seed(seed)
        d_model = int(model.cfg.d_model)
        noise_tensor = (torch.randn(n_samples, span[1] - span[0], d_model, generator=gen) * nu).to(
            device
        )
        corrupt = clean.expand(n_samples, -1)
        n_rows = n_samples

    engine = _engine(model, method)
    # The corrupted run reads no answer (answer_id -1 until the readout below chooses it).
    keep = names if keep_graph else []
    baseline, kept = engine.corrupted_final(
        TraceSetup(clean, corrupt, noise_tensor, span, -1, None), keep
    )
    # One readout of the corrupted rows and the clean row (each readout reads the whole
    # unembedding: 671 MB for gemma-3); sites.unembed validates it once, the engines then skip
    # the validation (readout_logits).
    with torch.set_grad_enabled(bool(keep)):  # prepare_trace runs without autograd
        final = torch.cat([baseline, clean_final.to(baseline.dtype)])
        logits = sites.unembed(model, final, grad=bool(keep))
        graph = CorruptedGraph(logits[:-1], kept) if keep else None
    logits = logits.detach()
    if answer_ids is None:
        answer_id, multi = int(logits[-1].argmax()), False
    else:
        answer_id, multi = answer_ids[0], len(answer_ids) > 1
    contrast_id = None
    if metric == "logit_diff":
        contrast_id = (
            answer_tokens(model, contrast)[0]
            if contrast is not None
            else _top_other(logits[:-1], answer_id)
        )
    setup = TraceSetup(clean, corrupt, noise_tensor, span, answer_id, contrast_id)
    scores = metric_of_logits(logits, setup, metric).float().cpu()
    corrupt_rows = scores[:-1]
    p_corrupt = float(corrupt_rows.mean())
    p_clean = float(scores[-1])

    return PreparedTrace(
        model=model,
        setup=setup,
        engine=engine,
        site=site,
        cells=_cells(model, kind, window, layers),
        layers=list(layers),
        positions=list(positions),
        clean_states=clean_states,
        clean_score=p_clean,
        corrupt_score=p_corrupt,
        corrupt_rows=corrupt_rows,
        tokens=tuple(sites.str_tokens(model, clean[0])),
        kind=kind,
        window=window,
        noise_level=nu,
        answer_is_multi_token=multi,
        metric=metric,
        n_rows=n_rows,
        corrupted_prompt=corrupted_prompt,
        graph=graph,
    )


def _top_other(logits: Tensor, answer_id: int) -> int:
    """The contrast of ``metric="logit_diff"``: the corrupted runs' likeliest other token."""
    probs = logits.float().softmax(-1).mean(0)
    probs[answer_id] = -1
    return int(probs.argmax())


def _engine(model: Model, method: str) -> TraceEngine:
    if method == "packed" or (method == "auto" and not replay_supported(model)):
        return PackedEngine(model)
    if method not in ("auto", "replay"):
        raise ArgumentError(f"method must be 'auto', 'replay' or 'packed', not {method!r}")
    return ReplayEngine(model)
