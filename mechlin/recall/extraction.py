"""Attribute extraction (Geva et al. 2023): which sublayers and heads write the answer out.

At the last position, each layer's attention (MHSA) output and MLP output is projected to the
vocabulary (final norm + unembedding by default; ``apply_norm=False`` projects the raw vector, as
the original code did with E). An *extraction event* is the model's final top-1 token being the
top-1 token of that projection. Reported: the per-layer event rate over prompts for MHSA and for
MLP, the per-example rate (an event in any layer), and per head, how often the head's own output
projects to the answer as top-1 and the answer's mean rank there. Geva et al. find attention
extracts far more often than MLPs (~68% of predictions show an MHSA event).

Per-head outputs are ``z_h @ W_O[h]`` (plus nothing: no bias is split across heads). Where the
model normalizes the attention output before adding it to the residual stream (Gemma's
post-attention norm), each head's share is its output times the norm's per-position gain,
``attn_out / attn_proj_out``, so the heads still sum exactly to the layer's attention output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mechlin import sites, support, viz
from mechlin._checks import Rule, checked
from mechlin._types import Model
from mechlin.datasets.facts import Fact, FactLike, as_facts, is_known
from mechlin.errors import EmptyInputError, OutOfRangeError
from mechlin.results import Result
from mechlin.runners import Item, Runner, as_runner


@dataclass(frozen=True)
class ExtractionRates(Result):
    """Extraction events of MHSA and MLP outputs per layer, and of single heads."""

    mhsa_events: Bool[Tensor, "prompt n_layers"]
    mlp_events: Bool[Tensor, "prompt n_layers"]
    head_events: Bool[Tensor, "prompt n_layers n_heads"]
    head_rank: Float[Tensor, "prompt n_layers n_heads"]  # rank of the prediction, 0 = top
    prompts: tuple[str, ...]
    predictions: tuple[str, ...]
    unknown: tuple[str, ...]  # prompts left out: top-1 is not the attribute
    apply_norm: bool

    @property
    def mhsa_rate(self) -> Float[Tensor, " n_layers"]:
        return self.mhsa_events.float().mean(0)

    @property
    def mlp_rate(self) -> Float[Tensor, " n_layers"]:
        return self.mlp_events.float().mean(0)

    @property
    def mhsa_any(self) -> float:
        """Share of prompts with an MHSA extraction event in some layer."""
        return float(self.mhsa_events.any(1).float().mean())

    @property
    def mlp_any(self) -> float:
        return float(self.mlp_events.any(1).float().mean())

    @checked(rules={"k": Rule(low=1, integer=True, what="a positive number of heads (>= 1)")})
    def top_heads(self, k: int = 5) -> list[tuple[int, int, float]]:
        """(layer, head, event rate) of the ``k`` heads that extract most often (all heads,
        ranked, where ``k`` exceeds their number)."""
        rate = self.head_events.float().mean(0)
        flat = rate.flatten().argsort(descending=True)[:k]
        n_heads = rate.shape[1]
        return [(int(i) // n_heads, int(i) % n_heads, float(rate.flatten()[i])) for i in flat]

    def summary(self) -> str:
        heads = ", ".join(f"L{layer}H{h} {r:.0%}" for layer, h, r in self.top_heads(3))
        return (
            f"{len(self.prompts)} prompts ({len(self.unknown)} unknown facts left out): "
            f"MHSA extraction event in some layer for {self.mhsa_any:.0%}, MLP for "
            f"{self.mlp_any:.0%}; peak per-layer rate MHSA {float(self.mhsa_rate.max()):.0%} "
            f"(layer {int(self.mhsa_rate.argmax())}), MLP {float(self.mlp_rate.max()):.0%} "
            f"(layer {int(self.mlp_rate.argmax())}); top heads: {heads}"
        )

    def plot(self, fig: Any = None) -> Any:
        """Per-layer extraction rate, MHSA vs MLP, and the per-head rate heatmap."""
        fig, panels = viz.figure(1, 2, fig=fig, figsize=(11, 3.5))
        ax, bx = panels[0]
        layers = range(self.mhsa_events.shape[1])
        ax.plot(layers, (100 * self.mhsa_rate).numpy(), marker=".", label="MHSA")
        ax.plot(layers, (100 * self.mlp_rate).numpy(), marker=".", label="MLP")
        ax.set_xlabel("layer")
        ax.set_ylabel("extraction rate (%)")
        ax.set_title(f"Attribute extraction at the last position ({len(self.prompts)} prompts)")
        ax.legend()
        img = bx.imshow(self.head_events.float().mean(0).T.numpy(), aspect="auto", cmap="Blues")
        bx.set_xlabel("layer")
        bx.set_ylabel("head")
        bx.set_yticks(range(self.head_events.shape[2]))
        bx.set_title("per-head extraction rate")
        fig.colorbar(img, ax=bx)
        fig.tight_layout()
        return fig


def head_outputs(
    model: Model, cache: Any, layer: int, pos: int = -1
) -> Float[Tensor, "batch n_heads d_model"]:
    """Each head's contribution to ``attn_out`` at ``pos``; they sum to ``attn_out`` there."""
    support.require(model, "extraction")
    z = cache[sites.hook_name(model, "z", layer)]
    n_pos = z.shape[1]
    if not -n_pos <= pos < n_pos:
        raise OutOfRangeError(
            f"head_outputs(): pos={pos} is out of range: the cached run has positions "
            f"0..{n_pos - 1} (or -{n_pos}..-1 from the end)"
        )
    z = z[:, pos]  # (batch, head, d_head)
    o = model.blocks[layer].attn.o
    inner = getattr(o, "original_component", o)
    weight = inner.weight  # (d_model, n_heads * d_head)
    if type(inner).__name__ == "Conv1D":  # GPT-2 family: weights stored (in, out)
        weight = weight.T
    n_heads, d_head = z.shape[1], z.shape[2]
    w = weight.T.reshape(n_heads, d_head, -1)  # (head, d_head, d_model)
    per_head = torch.einsum("bhd,hdm->bhm", z, w)
    proj = cache[sites.hook_name(model, "attn_proj_out", layer)][:, pos]
    out = cache[sites.hook_name(model, "attn_out", layer)][:, pos]
    # Gain of a post-attention norm (1 where there is none): heads then sum to attn_out.
    gain = torch.where(proj != 0, out / proj, torch.ones_like(out))
    return per_head * gain[:, None, :]


def _ranks(model: Model, vectors: Tensor, target: int, apply_norm: bool) -> Tensor:
    from transformer_lens.tools.analysis import logit_readout  # noqa: PLC0415

    readout = logit_readout(model, vectors, apply_ln=apply_norm, targets=[target])
    assert readout.target_ranks is not None
    return readout.target_ranks[..., 0]


@torch.no_grad()
def _extract_fact(model: Model, payload: tuple[Fact, bool]) -> dict[str, Any] | None:
    """One fact's extraction events (None if the model does not know it)."""
    fact, apply_norm = payload
    n_layers = int(model.cfg.n_layers)
    names = [
        sites.hook_name(model, site, layer)
        for layer in range(n_layers)
        for site in ("attn_out", "attn_proj_out", "mlp_out", "z")
    ]
    logits, cache = model.run_with_cache(model.to_tokens(fact.prompt), names_filter=names)
    pred = int(logits[0, -1].argmax())
    if not is_known(model, fact, pred):
        return None
    attn = torch.stack(
        [cache[sites.hook_name(model, "attn_out", j)][0, -1] for j in range(n_layers)]
    )
    ffn = torch.stack([cache[sites.hook_name(model, "mlp_out", j)][0, -1] for j in range(n_layers)])
    heads = torch.stack([head_outputs(model, cache, j)[0] for j in range(n_layers)])
    return dict(
        mhsa=(_ranks(model, attn, pred, apply_norm) == 0).cpu(),
        mlp=(_ranks(model, ffn, pred, apply_norm) == 0).cpu(),
        head_ranks=_ranks(model, heads, pred, apply_norm).cpu(),  # (layer, head)
        prediction=model.tokenizer.decode([pred]),
    )


@checked
@torch.no_grad()
def extraction_rates(
    model: Model,
    facts: Iterable[FactLike],
    *,
    apply_norm: bool = True,
    progress: bool = True,
    runner: Runner | None = None,
) -> ExtractionRates:
    """Extraction events at the last position for every fact the model knows.

    Facts whose attribute's first token is not the model's top-1 are left out and listed in
    ``unknown``; (prompt, subject) pairs use the model's own prediction.
    ``runner=mechlin.RayRunner(...)`` computes the facts on Ray workers (the same events).
    """
    items = as_facts(facts)
    work = [Item(f"fact-{i:06d}", (fact, apply_norm)) for i, fact in enumerate(items)]
    found = as_runner(runner).map(model, _extract_fact, work, progress=progress, desc="extraction")
    mhsa, mlp, head_ev, head_rank, prompts, preds, unknown = [], [], [], [], [], [], []
    for fact, w in zip(items, work, strict=True):
        record = found[w.key]
        if record is None:
            unknown.append(fact.prompt)
            continue
        mhsa.append(record["mhsa"])
        mlp.append(record["mlp"])
        head_ev.append(record["head_ranks"] == 0)
        head_rank.append(record["head_ranks"].float())
        prompts.append(fact.prompt)
        preds.append(record["prediction"])
    if not prompts:
        raise EmptyInputError(
            f"the model knows none of the {len(items)} facts: no extraction to measure"
        )
    return ExtractionRates(
        mhsa_events=torch.stack(mhsa).cpu(),
        mlp_events=torch.stack(mlp).cpu(),
        head_events=torch.stack(head_ev).cpu(),
        head_rank=torch.stack(head_rank).cpu(),
        prompts=tuple(prompts),
        predictions=tuple(preds),
        unknown=tuple(unknown),
        apply_norm=apply_norm,
    )
