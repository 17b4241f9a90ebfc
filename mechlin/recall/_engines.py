"""The two ways ``causal_trace`` computes its cells; both match the one-forward-per-cell reference.

``ReplayEngine``: per position t, one pass over the layers in which every cell's rows join the
batch at the first layer their restoration can change, run only at positions t.. (keys and
values of earlier positions come from the cached corrupted run); the last position alone is
unembedded. ``PackedEngine``: many (cell, noise sample) rows per full forward pass, for models
whose layers cannot be replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from mechlin import sites
from mechlin._types import Model
from mechlin.recall._replay import Replayer

Kind = Literal["resid", "mlp", "attn"]
Metric = Literal["prob", "logprob", "logit_diff"]


@dataclass(frozen=True)
class TraceSetup:
    """Everything one trace needs that does not depend on the cell."""

    clean: Tensor  # [1, pos] token ids
    corrupt: Tensor  # [n_rows, pos] token ids (n_samples copies, or the corrupted prompt)
    noise: Tensor | None  # [n_rows, subject_len, d_model], added at the subject embeddings
    span: tuple[int, int]
    answer_id: int
    contrast_id: int | None


def trace_metric(
    model: Model, final_resid: Float[Tensor, "rows d_model"], setup: TraceSetup, metric: Metric
) -> Float[Tensor, " rows"]:
    """The metric of the answer from last-position residual states (final norm + unembed)."""
    logits = sites.unembed(model, final_resid).float()
    if metric == "prob":
        return logits.softmax(-1)[:, setup.answer_id]
    if metric == "logprob":
        return logits.log_softmax(-1)[:, setup.answer_id]
    assert setup.contrast_id is not None
    return logits[:, setup.answer_id] - logits[:, setup.contrast_id]


@runtime_checkable
class TraceEngine(Protocol):
    """How ``causal_trace`` computes its cells: the corrupted baseline and every cell's score."""

    def corrupted_final(self, setup: TraceSetup) -> Float[Tensor, "rows d_model"]: ...

    def scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        clean_states: Float[Tensor, "n_layers pos d_model"],
        metric: Metric,
        budget: int,
    ) -> Float[Tensor, "n_cells n_positions"]: ...


def _noise_hooks(
    model: Model, setup: TraceSetup, row_sample: Tensor
) -> list[tuple[str, Callable[..., Any]]]:
    if setup.noise is None:
        return []
    s0, s1 = setup.span
    noise = setup.noise[row_sample]

    def add_noise(embed: Tensor, hook: Any) -> Tensor:
        embed = embed.clone()
        embed[:, s0:s1] += noise.to(embed.dtype)
        return embed

    return [(sites.hook_name(model, "embed"), add_noise)]


def _rows_per_chunk(model: Model, n_new: int, n_pos: int, prefix: int, budget: int) -> int:
    cfg = model.cfg
    kv_dim = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads) * int(cfg.d_head)
    per_row = 4 * n_new * (6 * cfg.d_model + 3 * int(cfg.d_mlp or 0) + 2 * cfg.n_heads * n_pos)
    per_row += 8 * cfg.n_layers * kv_dim * prefix
    return max(1, budget // per_row)


def _chunks(n_groups: int, rows_per_group: int, rows_per_chunk: int) -> list[range]:
    per = max(1, rows_per_chunk // rows_per_group)
    return [range(i, min(n_groups, i + per)) for i in range(0, n_groups, per)]


class ReplayEngine:
    """Rerun only the layers and positions a restoration can change (``mechlin.recall._replay``)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.replayer = Replayer(model)
        self.n_layers = int(model.cfg.n_layers)

    @torch.no_grad()
    def corrupted_final(self, setup: TraceSetup) -> Tensor:
        model, n = self.model, self.n_layers
        rows = setup.corrupt.shape[0]
        pre = [sites.hook_name(model, "resid_pre", j) for j in range(n)]
        post = [sites.hook_name(model, "resid_post", j) for j in range(n)]
        saved: dict[str, Tensor] = {}

        def saver(name: str) -> Callable[..., None]:
            def save(act: Tensor, hook: Any) -> None:
                saved[name] = act  # hook.name may be an alias's canonical name

            return save

        hooks = _noise_hooks(model, setup, torch.arange(rows)) + [(h, saver(h)) for h in pre + post]
        self.keys, self.values = self.replayer.run(setup.corrupt, hooks)
        self._kwargs: dict[int, Sequence[dict[str, Any]]] = {}  # per position, for this run
        self.resid_pre = [saved[h] for h in pre]  # each (rows, pos, d_model)
        self.resid_post = [saved[h] for h in post]
        return self.resid_post[-1][:, -1]

    @torch.no_grad()
    def scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        clean_states: Tensor,
        metric: Metric,
        budget: int,
    ) -> Tensor:
        model = self.model
        n_rows = setup.corrupt.shape[0]
        n_pos = setup.corrupt.shape[1]
        out = torch.empty(len(cells), len(positions))
        # Rows join at the first layer their restoration can change: after the restored hidden
        # state (resid), or at the window's first sublayer (mlp / attn).
        resid = site == "resid_post"
        join_at = [c[0] + 1 if resid else c[1].start for c in cells]
        order = sorted(range(len(cells)), key=lambda i: join_at[i])
        for col, t in enumerate(positions):
            if t not in self._kwargs:  # adaptive tracing comes back to a position
                self._kwargs[t] = self.replayer.layer_kwargs(
                    setup.corrupt, self.keys, self.values, t
                )
            kwargs = self._kwargs[t]
            per_chunk = _rows_per_chunk(model, n_pos - t, n_pos, t, budget)
            for chunk in _chunks(len(order), n_rows, per_chunk):
                cell_ids = [order[i] for i in chunk]
                final = self._run_chunk(
                    setup, site, cells, cell_ids, join_at, t, clean_states, kwargs
                )
                values = trace_metric(model, final, setup, metric).reshape(len(cell_ids), n_rows)
                out[cell_ids, col] = values.mean(1).float().cpu()
        return out

    def _run_chunk(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        cell_ids: list[int],
        join_at: list[int],
        t: int,
        clean_states: Tensor,
        kwargs: Sequence[dict[str, Any]],
    ) -> Tensor:
        model, n = self.model, self.n_layers
        n_rows = setup.corrupt.shape[0]
        samples = torch.arange(n_rows, device=setup.corrupt.device)
        joins: dict[int, list[Tensor]] = {}
        for i in cell_ids:
            layer, restored = cells[i]
            if site == "resid_post":
                hidden = self.resid_post[layer][:, t:].clone()
                hidden[:, 0] = clean_states[layer, t]
            else:
                hidden = self.resid_pre[restored.start][:, t:]
            joins.setdefault(join_at[i], []).append(hidden)
        joined = {j: torch.cat(h) for j, h in joins.items()}
        start = min(joined)
        # Layer j's batch holds the rows of every cell joined at or before j, in join order.
        rows_at: list[Tensor] = []
        count = 0
        for j in range(n):
            count += len(joins.get(j, []))
            rows_at.append(samples.repeat(count))
        cache = self.replayer.prefix_cache(self.keys, self.values, t, rows_at)
        hooks = []
        if site != "resid_post":
            # Row offsets of each cell (cells are ordered by join layer).
            offset, spans = 0, {}
            for i in cell_ids:
                spans[i] = offset
                offset += n_rows
            for j in range(start, n):
                rows = [
                    torch.arange(spans[i], spans[i] + n_rows) for i in cell_ids if j in cells[i][1]
                ]
                if rows:
                    hooks.append(
                        (
                            sites.hook_name(model, site, j),
                            _restore_hook(torch.cat(rows), clean_states[j, t]),
                        )
                    )
        first = joined.pop(start)
        final = self.replayer.replay(start, first, joined, kwargs, cache, hooks)
        return final[:, -1]


def _restore_hook(rows: Tensor, clean: Tensor) -> Callable[..., Tensor]:
    def hook(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        act[rows.to(act.device), 0] = clean.to(act.dtype)
        return act

    return hook


class PackedEngine:
    """Many (cell, noise sample) rows per full forward pass; works on any hooked model."""

    def __init__(self, model: Model) -> None:
        self.model = model

    @torch.no_grad()
    def corrupted_final(self, setup: TraceSetup) -> Tensor:
        rows = setup.corrupt.shape[0]
        return self._final(setup.corrupt, _noise_hooks(self.model, setup, torch.arange(rows)))

    def _final(self, tokens: Tensor, hooks: list[tuple[str, Callable[..., Any]]]) -> Tensor:
        name = sites.hook_name(self.model, "final_resid")
        saved: list[Tensor] = []

        def save(act: Tensor, hook: Any) -> None:
            saved.append(act[:, -1].clone())

        self.model.run_with_hooks(tokens, fwd_hooks=[*hooks, (name, save)], return_type=None)
        return saved[0]

    @torch.no_grad()
    def scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        clean_states: Tensor,
        metric: Metric,
        budget: int,
    ) -> Tensor:
        model = self.model
        n_rows, n_pos = setup.corrupt.shape
        units = [(i, col) for i in range(len(cells)) for col in range(len(positions))]
        d_mlp = int(model.cfg.d_mlp or 0)
        per_row = 4 * n_pos * (6 * model.cfg.d_model + 3 * d_mlp + model.cfg.d_vocab)
        out = torch.empty(len(cells), len(positions))
        for chunk in _chunks(len(units), n_rows, max(1, budget // per_row)):
            batch = [units[k] for k in chunk]
            sample = torch.arange(n_rows).repeat(len(batch))
            tokens = setup.corrupt[sample.to(setup.corrupt.device)]
            hooks = _noise_hooks(model, setup, sample)
            by_layer: dict[int, tuple[list[int], list[int]]] = {}
            for b, (i, col) in enumerate(batch):
                for layer in cells[i][1]:
                    r, p = by_layer.setdefault(layer, ([], []))
                    r.extend(range(b * n_rows, (b + 1) * n_rows))
                    p.extend([positions[col]] * n_rows)
            for layer, (r, p) in by_layer.items():
                hooks.append(
                    (sites.hook_name(model, site, layer), _packed_hook(r, p, clean_states[layer]))
                )
            final = self._final(tokens, hooks)
            values = trace_metric(model, final, setup, metric).reshape(len(batch), n_rows).mean(1)
            for (i, col), v in zip(batch, values.tolist(), strict=True):
                out[i, col] = v
        return out


def _packed_hook(rows: list[int], pos: list[int], clean: Tensor) -> Callable[..., Tensor]:
    r, p = torch.tensor(rows), torch.tensor(pos)

    def hook(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        act[r.to(act.device), p.to(act.device)] = clean[p.to(clean.device)].to(act.dtype)
        return act

    return hook
