"""Attribution patching: every cell of a causal trace estimated from one forward and one backward.

Exact causal tracing costs one restored run per (layer, position) cell. Attribution patching
(Nanda 2023; AtP in Kramar et al. 2024) estimates every cell's indirect effect at once from one
forward and one backward pass of the corrupted run, by the first-order Taylor expansion of the
metric m around the corrupted activations a*:

    IE(l, t) ~ (a_clean(l, t) - a*(l, t)) . dm/da(l, t) |_{corrupted run}

In noise mode each noise sample has its own corrupted activations and gradient; the estimate
is the mean over samples, like the exact score. In corrupted-prompt mode there is one row. For
``kind="mlp"``/``"attn"`` a cell restores a window of sublayer outputs at one token; its
estimate is the sum of the window's single-layer estimates (this ignores how restoring one
sublayer of the window changes the next ones at the same token, one of the ways the estimate
can err). The gradients come from TransformerLens's ``cache_activation_and_gradient``
(``transformer_lens.tools.analysis.attribution_patching``); mechlin adds the noise mode (a
hook on the embeddings around that call), windows, and ROME's metrics and grid.

The estimate is cheap and often right, and wrong in known ways: a saturated softmax (use
``metric="logprob"`` or ``"logit_diff"``, or ``linearize="logprob"``: linearise the
log-probability and read the probability back), attention patterns that a restoration changes
non-linearly, the first layers (Kramar et al. 2024). ``adaptive_trace``
(``mechlin.recall.adaptive``) therefore restores exactly the cells it ranks highest and
measures its error on a random sample of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.tools.analysis.attribution_patching import cache_activation_and_gradient

from mechlin import sites
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.errors import ArgumentError
from mechlin.recall._engines import Kind, Metric, TraceSetup, _noise_hooks, last_position_hook
from mechlin.recall.tracing import CausalTrace, PreparedTrace, prepare_trace


@dataclass(frozen=True)
class AttributionTrace(CausalTrace):
    """Attribution-patching estimates of every cell's score (a ``CausalTrace`` of estimates).

    ``scores`` = corrupt_score + the first-order estimate of each cell's indirect effect; it
    plots, tabulates and saves like a ``CausalTrace``.
    """

    def summary(self) -> str:
        return "attribution estimate (first order, no cell restored): " + super().summary()

    def plot(self, ax: Any = None) -> Any:
        fig = super().plot(ax)
        fig.axes[0].set_title(
            f"Estimated (attribution patching) impact of restoring state: {self.answer!r}",
            fontsize=9,
        )
        return fig


def _metric_of_logits(logits: Tensor, setup: TraceSetup, metric: str) -> Tensor:
    last = logits[:, -1].float()
    if metric == "prob":
        return last.softmax(-1)[:, setup.answer_id]
    if metric == "logprob":
        return last.log_softmax(-1)[:, setup.answer_id]
    assert setup.contrast_id is not None
    return last[:, setup.answer_id] - last[:, setup.contrast_id]


Linearize = Literal["metric", "logprob"]


def layer_estimates(
    prep: PreparedTrace, linearize: Linearize = "metric"
) -> tuple[Float[Tensor, "rows n_layers pos"], Bool[Tensor, "n_layers pos"]]:
    """First-order estimate, per corrupted row, of restoring each single layer's site state at
    each position.

    One forward of the corrupted rows (with their noise) and one backward of the summed metric
    (rows are independent, so each row gets its own gradient); the forward is
    ``prepare_trace``'s corrupted run when it kept its graph (``keep_graph=True``; the graph
    serves one call), else a forward of the bridge through TransformerLens's
    ``cache_activation_and_gradient``. The estimate for row i is
    (clean - corrupted_i) . gradient_i of the trace's metric, or of the answer's log-probability
    with ``linearize="logprob"``. Also returns where a restoration can change the metric at
    all: the clean and corrupted states differ, and the state reaches the last position (the
    last layer's states at earlier positions feed nothing the metric reads). Elsewhere the
    indirect effect is 0 by construction.
    """
    model, setup = prep.model, prep.setup
    n_layers = int(model.cfg.n_layers)
    names = [sites.hook_name(model, prep.site, j) for j in range(n_layers)]
    rows = setup.corrupt.shape[0]
    differentiated = "logprob" if linearize == "logprob" else prep.metric

    def metric_fn(logits: Tensor) -> Tensor:
        return _metric_of_logits(logits, setup, differentiated).sum()

    graph = prep.take_graph()
    grads: Sequence[Tensor | None] = ()
    if graph is not None:  # prepare_trace's corrupted run, recorded: one backward from it
        live = [graph.activations[name] for name in names]
        with torch.enable_grad():
            metric = metric_fn(graph.logits[:, None])
        grads = torch.autograd.grad(metric, live, allow_unused=True)
        activations = {name: a.detach() for name, a in zip(names, live, strict=True)}
        gradients: dict[str, Tensor | None] = dict(zip(names, grads, strict=True))
    if graph is None or any(g is None for g in grads):
        # Every layer's site reaches the metric, so a missing gradient means the hooked tensor
        # is one the forward does not consume (TransformerLens converts some hook points):
        # cache_activation_and_gradient reads the gradients with backward hooks instead.
        noise_hooks = _noise_hooks(model, setup, torch.arange(rows))
        hooks = [*noise_hooks, last_position_hook(model)]
        with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
            cache = cache_activation_and_gradient(
                model, setup.corrupt, metric_fn, names_filter=names
            )
        activations, gradients = cache.activations, cache.gradients
    out = torch.zeros(rows, n_layers, setup.corrupt.shape[1])
    changed = torch.zeros(n_layers, setup.corrupt.shape[1], dtype=torch.bool)
    for j, name in enumerate(names):
        grad = gradients.get(name)
        delta = prep.clean_states[j].to(activations[name].dtype) - activations[name]
        changed[j] = (delta != 0).any(-1).any(0).cpu()
        if grad is not None:  # None: the site does not reach the metric
            out[:, j] = (delta.float() * grad.float()).sum(-1).cpu()
    changed[n_layers - 1, :-1] = False  # read by no later layer, and not the last position
    return out, changed


def _check_linearize(linearize: str, metric: str) -> None:
    if linearize not in ("metric", "logprob"):
        raise ArgumentError(f"linearize={linearize!r}: pass 'metric' or 'logprob'")
    if linearize == "logprob" and metric == "logit_diff":
        raise ArgumentError(
            'linearize="logprob" reads back a probability; with metric="logit_diff" pass '
            'linearize="metric"'
        )


def estimate_grid(
    prep: PreparedTrace, linearize: Linearize = "metric"
) -> tuple[Float[Tensor, "n_rows n_positions"], Bool[Tensor, "n_rows n_positions"]]:
    """Estimated indirect effect of every cell of the trace's grid (windows summed), and
    which cells restore a state that differs from the corrupted run's.

    ``linearize="metric"``: the mean over corrupted rows of the metric's first-order change.
    ``linearize="logprob"`` (metric ``prob`` or ``logprob``): the answer's log-probability is
    linearised per row and the probability read back, exp(min(log p_i + d_i, 0)) - p_i,
    averaged over rows: a restoration that lifts a tiny probability is estimated on the scale
    where its effect is close to linear (for ``logprob`` this is the plain estimate).
    """
    _check_linearize(linearize, prep.metric)
    per_row, moved = row_estimates(prep, linearize)
    return combine_rows(per_row, prep.corrupt_rows, linearize, prep.metric), moved


def row_estimates(
    prep: PreparedTrace, linearize: Linearize = "metric"
) -> tuple[Float[Tensor, "rows n_rows n_positions"], Bool[Tensor, "n_rows n_positions"]]:
    """Each corrupted row's first-order change of every cell of the grid (windows summed), in
    the metric or in the log-probability (``linearize``), and which cells can change at all."""
    per_layer, changed = layer_estimates(prep, linearize)
    cols = torch.tensor(prep.positions)
    per_row = torch.stack(
        [per_layer[:, list(restored)].sum(1)[:, cols] for _, restored in prep.cells], 1
    )  # rows, grid rows, grid columns
    moved = torch.stack([changed[list(restored)].any(0)[cols] for _, restored in prep.cells])
    return per_row, moved


def combine_rows(
    per_row: Tensor, corrupt_rows: Tensor, linearize: Linearize, metric: str
) -> Float[Tensor, "n_rows n_positions"]:
    """The estimated indirect effect from each row's first-order change (``estimate_grid``)."""
    if linearize == "logprob" and metric == "prob":
        p = corrupt_rows.to(per_row.dtype)[:, None, None]
        return (torch.exp((p.log() + per_row).clamp(max=0)) - p).mean(0)
    return per_row.mean(0)


@checked
def attribution_patch(
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
    linearize: Linearize = "metric",
) -> AttributionTrace:
    """Estimate every cell of ``causal_trace`` by attribution patching (no cell restored).

    Arguments as in ``causal_trace``; the corruption (noise samples, seed, corrupted prompt)
    and the scores' meaning are the same, so the result compares cell by cell with the exact
    trace. Costs the clean run, the corrupted run and one backward pass.

    Args:
        linearize: ``"metric"``: the first-order change of the metric itself (AtP).
            ``"logprob"``: linearise the answer's log-probability per noise sample and read the
            probability back (``estimate_grid``); for ``metric="prob"`` this ranks cells that
            lift a tiny probability better. Not with ``metric="logit_diff"``.
    """
    _check_linearize(linearize, metric)
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
        method="auto",
        keep_graph=True,
    )
    ie, _ = estimate_grid(prep, linearize)
    return AttributionTrace(**prep.fields(prep.corrupt_score + ie))
