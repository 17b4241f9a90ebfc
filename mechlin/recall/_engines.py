"""The two ways ``causal_trace`` computes its cells; both match the one-forward-per-cell reference.

``ReplayEngine``: per position t, one pass over the layers in which every cell's rows join the
batch at the first layer their restoration can change, run only at positions t.. (keys and
values of earlier positions come from the cached corrupted run); the last position alone is
unembedded. For scattered cells (adaptive tracing) it replays several positions in one pass
where that is cheaper (``merge_positions``). ``PackedEngine``: many (cell, noise sample) rows per
full forward pass, for models whose layers cannot be replayed.
"""

from __future__ import annotations

import math
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


def readout_logits(model: Model, final_resid: Float[Tensor, "rows d_model"]) -> Tensor:
    """Logits of last-position residual states: ``sites.unembed``'s computation (final norm,
    unembedding, the adapter's logit transform) without its per-call validation, which walks
    every module of the model; the engines call this once per batch. ``sites.unembed`` has
    validated the model in ``prepare_trace`` (the two agree bit for bit: tests)."""
    norm = getattr(model, "ln_final", None)
    if getattr(model.cfg, "normalization_type", None) is None or norm is None:
        return sites.unembed(model, final_resid)
    hidden = norm(final_resid.unsqueeze(0)).squeeze(0)
    logits = hidden.to(model.W_U.dtype) @ model.W_U
    if bool(model.b_U.any()):  # adding a zero bias changes nothing but costs a pass over the
        logits = logits + model.b_U  # logits (262k columns per row for gemma-3)
    transform = getattr(getattr(model, "adapter", None), "apply_output_logits_transform", None)
    return transform(logits) if callable(transform) else logits


def last_position_only(resid: Tensor, hook: Any) -> Tensor:
    """A hook on the unembedding's input (site ``unembed_in``): the metrics read the last
    position only, so only that one is unembedded (a vocabulary of 262k makes the others a
    large share of a run). It sits after the final norm, not on the final residual stream:
    GPT-2, GPT-J, GPT-Neo, CodeGen and GPTBigCode reshape the final norm's output with the
    original sequence length, which a shorter tensor breaks."""
    return resid[:, -1:]


def last_position_hook(model: Model) -> tuple[str, Callable[..., Tensor]]:
    """``last_position_only`` at the model's ``unembed_in`` hook point."""
    return sites.hook_name(model, "unembed_in"), last_position_only


def trace_metric(
    model: Model, final_resid: Float[Tensor, "rows d_model"], setup: TraceSetup, metric: Metric
) -> Float[Tensor, " rows"]:
    """The metric of the answer from last-position residual states (final norm + unembed)."""
    return metric_of_logits(readout_logits(model, final_resid), setup, metric)


def metric_of_logits(
    logits: Float[Tensor, "rows d_vocab"], setup: TraceSetup, metric: Metric
) -> Float[Tensor, " rows"]:
    """The metric of the answer from last-position logits (``trace_metric`` after the readout)."""
    logits = logits.float()
    if metric == "logit_diff":
        assert setup.contrast_id is not None
        return logits[:, setup.answer_id] - logits[:, setup.contrast_id]
    # The answer's column of the softmax, without dividing the whole vocabulary; the normalizer
    # is summed in float64 (a float32 softmax is off by ~1e-5 at p = 0.7 over 49k tokens).
    shifted = logits - logits.max(-1, keepdim=True).values
    total = shifted.exp().sum(-1, dtype=torch.float64)
    if metric == "prob":
        return (shifted[:, setup.answer_id].exp() / total).float()
    return (shifted[:, setup.answer_id] - total.log()).float()


@runtime_checkable
class TraceEngine(Protocol):
    """How ``causal_trace`` computes its cells: the corrupted baseline and every cell's score.

    ``row_scores`` gives each cell's metric per corrupted row (noise sample), for all rows or
    for the given subset of them; a cell's score is the mean over all rows (``scores``).
    ``cell_scores`` gives scattered cells (``cells[k]`` at ``positions[k]``) on their own rows
    (``cell_rows[k]``): adaptive tracing completes some cells on the rows its screen left and
    restores others on all.
    ``corrupted_final`` runs the corrupted rows and returns their last-position final states;
    with ``keep`` (hook names) it records autograd and also returns those points' live
    activations, so that one backward from the returned states gives their gradients
    (``attribution.layer_estimates``): the attribution estimate shares this forward.
    """

    def corrupted_final(
        self, setup: TraceSetup, keep: Sequence[str] = ()
    ) -> tuple[Float[Tensor, "rows d_model"], dict[str, Tensor]]: ...

    def row_scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        clean_states: Float[Tensor, "n_layers pos d_model"],
        metric: Metric,
        budget: int,
        rows: Sequence[int] | None = None,
    ) -> Float[Tensor, "n_cells n_positions n_rows"]: ...

    def cell_scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        cell_rows: Sequence[Sequence[int]],
        clean_states: Float[Tensor, "n_layers pos d_model"],
        metric: Metric,
        budget: int,
    ) -> list[Float[Tensor, " rows"]]: ...


def _selected_rows(setup: TraceSetup, rows: Sequence[int] | None) -> Tensor:
    n = setup.corrupt.shape[0]
    return torch.arange(n) if rows is None else torch.as_tensor(list(rows), dtype=torch.long)


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


def _saver(name: str, into: dict[str, Tensor]) -> Callable[..., None]:
    """A forward hook that keeps its activation in ``into[name]`` (as given: with autograd,
    when the run records it)."""

    def save(act: Tensor, hook: Any) -> None:
        into[name] = act  # hook.name may be an alias's canonical name

    return save


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

    # The fixed price of one layer call, in rows at one position through one layer:
    # ``benchmarks/replay_batch.py`` measures ~4-8 ms fixed and ~0.09-0.16 ms per row and
    # position on CPU (smollm2-135m, gemma-3-270m, 1 thread; two runs), i.e. 40-85; ours, the
    # lower end. A GPU's fixed price (kernel launches) is relatively higher: merging more would
    # pay there. The readout is not in it: ``cell_scores`` reads all its batches out at once.
    call_cost: float = 40.0

    def __init__(self, model: Model) -> None:
        self.model = model
        self.replayer = Replayer(model)
        self.n_layers = int(model.cfg.n_layers)
        self._names: dict[tuple[str, int], str] = {}  # (site, layer) -> checked hook name

    def _hook_name(self, site: sites.LayerSite, layer: int) -> str:
        """``sites.hook_name``, checked once per site and layer (each check copies the
        bridge's hook dictionary: ~0.6 ms on smollm2, once per restored layer of every batch)."""
        if (site, layer) not in self._names:
            self._names[site, layer] = sites.hook_name(self.model, site, layer)
        return self._names[site, layer]

    def corrupted_final(
        self, setup: TraceSetup, keep: Sequence[str] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        model, n = self.model, self.n_layers
        rows = setup.corrupt.shape[0]
        pre = [sites.hook_name(model, "resid_pre", j) for j in range(n)]
        post = [sites.hook_name(model, "resid_post", j) for j in range(n)]
        saved: dict[str, Tensor] = {}
        kept: dict[str, Tensor] = {}
        hooks = [
            *_noise_hooks(model, setup, torch.arange(rows)),
            *[(h, _saver(h, saved)) for h in pre + post],
            *[(h, _saver(h, kept)) for h in keep],
        ]
        self.keys, self.values = self.replayer.run(setup.corrupt, hooks, grad=bool(keep))
        self._kwargs: dict[int, Sequence[dict[str, Any]]] = {}  # per position, for this run
        self.resid_pre = [saved[h].detach() for h in pre]  # each (rows, pos, d_model)
        self.resid_post = [saved[h].detach() for h in post]
        with torch.set_grad_enabled(bool(keep)):  # a view taken without autograd cuts the graph
            return saved[post[-1]][:, -1], kept

    @torch.no_grad()
    def row_scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        clean_states: Tensor,
        metric: Metric,
        budget: int,
        rows: Sequence[int] | None = None,
    ) -> Tensor:
        model = self.model
        samples = _selected_rows(setup, rows)
        n_rows = len(samples)
        n_pos = setup.corrupt.shape[1]
        out = torch.empty(len(cells), len(positions), n_rows)
        finals: list[Tensor] = []  # each batch's last-position states
        placed: list[tuple[list[int], int]] = []  # each batch's cells and column
        # Rows join at the first layer their restoration can change: after the restored hidden
        # state (resid), or at the window's first sublayer (mlp / attn).
        resid = site == "resid_post"
        join_at = [c[0] + 1 if resid else c[1].start for c in cells]
        order = sorted(range(len(cells)), key=lambda i: join_at[i])
        for col, t in enumerate(positions):
            kwargs = self._layer_kwargs(setup, t)
            per_chunk = _rows_per_chunk(model, n_pos - t, n_pos, t, budget)
            for chunk in _chunks(len(order), n_rows, per_chunk):
                cell_ids = [order[i] for i in chunk]
                final = self._run_chunk(
                    setup,
                    site,
                    cells,
                    cell_ids,
                    join_at,
                    t,
                    dict.fromkeys(cell_ids, t),
                    clean_states,
                    kwargs,
                    dict.fromkeys(cell_ids, samples),
                )
                finals.append(final)
                placed.append((cell_ids, col))
        # One readout for all columns, in the chunks ``cell_scores`` reads in: the same rows
        # read out in the same batches round the same way (CPU matrix kernels round a row
        # differently in batches of other sizes), so an adaptive trace's exact cells can equal
        # these bit for bit.
        values = self._read_out(finals, setup, metric, budget)
        start = 0
        for cell_ids, col in placed:
            size = len(cell_ids) * n_rows
            out[cell_ids, col] = values[start : start + size].reshape(len(cell_ids), n_rows)
            start += size
        return out

    @torch.no_grad()
    def cell_scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        cell_rows: Sequence[Sequence[int]],
        clean_states: Tensor,
        metric: Metric,
        budget: int,
    ) -> list[Tensor]:
        """Each cell's metric at its position on its own rows (see ``TraceEngine``).

        A few scattered rows per position would each pay a whole pass over the layers, which
        on small batches costs mostly the fixed price of a layer call. So positions are grouped
        (``merge_positions``): a group replays from its first position t0, and a cell at a later
        position p rides along with positions t0..p-1 left at their corrupted states (a
        restoration at p cannot change earlier positions of a causal model), trading
        (p - t0) more positions per row for fewer layer calls. Within a group, rows are batched
        as ``row_scores`` batches them, up to the memory budget.
        """
        n_pos = setup.corrupt.shape[1]
        resid = site == "resid_post"
        join_at = [c[0] + 1 if resid else c[1].start for c in cells]
        todo = [i for i in range(len(cells)) if cell_rows[i]]
        work: dict[int, int] = {}  # per position: the row-layers to replay
        for i in todo:
            p = positions[i]
            work[p] = work.get(p, 0) + len(cell_rows[i]) * (self.n_layers - join_at[i])
        layer_calls = self.n_layers - min((join_at[i] for i in todo), default=self.n_layers)
        out = [torch.empty(len(r)) for r in cell_rows]
        finals: list[Tensor] = []  # each batch's last-position states, rows of ``done`` in turn
        done: list[int] = []
        for group in merge_positions(work, n_pos, layer_calls, self.call_cost):
            t = group[0]
            members = set(group)
            order = sorted((i for i in todo if positions[i] in members), key=lambda i: join_at[i])
            kwargs = self._layer_kwargs(setup, t)
            per_chunk = _rows_per_chunk(self.model, n_pos - t, n_pos, t, budget)
            chunk: list[int] = []
            for k, i in enumerate(order):
                chunk.append(i)
                size = sum(len(cell_rows[c]) for c in chunk)
                nxt = order[k + 1] if k + 1 < len(order) else None
                if nxt is not None and size + len(cell_rows[nxt]) <= per_chunk:
                    continue
                samples = {c: _selected_rows(setup, cell_rows[c]) for c in chunk}
                pos_of = {c: positions[c] for c in chunk}
                finals.append(
                    self._run_chunk(
                        setup, site, cells, chunk, join_at, t, pos_of, clean_states, kwargs, samples
                    )
                )
                done.extend(chunk)
                chunk = []
        if not done:
            return out
        values = self._read_out(finals, setup, metric, budget)
        start = 0
        for c in done:
            out[c] = values[start : start + len(cell_rows[c])]
            start += len(cell_rows[c])
        return out

    def _read_out(
        self, finals: list[Tensor], setup: TraceSetup, metric: Metric, budget: int
    ) -> Tensor:
        """The metric of every batch's last-position states, read out together: the
        unembedding's fixed price (reading its weights: 671 MB for gemma-3's 262k tokens) is
        paid once per memory-budget chunk of rows, not once per batch."""
        final = torch.cat(finals)
        per_readout = max(1, budget // (16 * int(self.model.cfg.d_vocab)))
        return torch.cat(
            [
                trace_metric(self.model, final[i : i + per_readout], setup, metric).float().cpu()
                for i in range(0, len(final), per_readout)
            ]
        )

    def _layer_kwargs(self, setup: TraceSetup, t: int) -> Sequence[dict[str, Any]]:
        if t not in self._kwargs:  # adaptive tracing comes back to a position
            self._kwargs[t] = self.replayer.layer_kwargs(setup.corrupt, self.keys, self.values, t)
        return self._kwargs[t]

    def _run_chunk(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        cell_ids: list[int],
        join_at: list[int],
        t: int,
        pos_of: dict[int, int],  # each cell's position (>= t)
        clean_states: Tensor,
        kwargs: Sequence[dict[str, Any]],
        cell_samples: dict[int, Tensor],  # each cell's corrupted rows (noise samples)
    ) -> Tensor:
        """Restore ``cell_ids`` (in join order), each at its position, replaying positions
        t..; one final state per row, the rows of each cell in turn."""
        n = self.n_layers
        device = setup.corrupt.device
        samples = {i: cell_samples[i].to(device) for i in cell_ids}
        joins: dict[int, list[Tensor]] = {}
        for i in cell_ids:
            layer, restored = cells[i]
            if site == "resid_post":
                hidden = self.resid_post[layer][samples[i], t:]  # a copy (advanced indexing)
                hidden[:, pos_of[i] - t] = clean_states[layer, pos_of[i]]
            else:
                hidden = self.resid_pre[restored.start][samples[i], t:]
            joins.setdefault(join_at[i], []).append(hidden)
        joined = {j: torch.cat(h) for j, h in joins.items()}
        start = min(joined)
        # Layer j's batch holds the rows of every cell joined at or before j, in join order.
        rows_at: list[Tensor] = []
        members: list[Tensor] = []
        by_join = sorted(cell_ids, key=lambda i: join_at[i])
        k = 0
        for j in range(n):
            while k < len(by_join) and join_at[by_join[k]] <= j:
                members.append(samples[by_join[k]])
                k += 1
            rows_at.append(torch.cat(members) if members else samples[cell_ids[0]][:0])
        cache = self.replayer.prefix_cache(self.keys, self.values, t, rows_at)
        hooks = []
        if site != "resid_post":
            # Row offsets of each cell (cells are ordered by join layer).
            offset, spans = 0, {}
            for i in cell_ids:
                spans[i] = (offset, offset + len(samples[i]))
                offset += len(samples[i])
            for j in range(start, n):
                here = [i for i in cell_ids if j in cells[i][1]]  # the cells restoring layer j
                if here:
                    rows = torch.cat([torch.arange(*spans[i]) for i in here])
                    at = torch.cat([torch.full((len(samples[i]),), pos_of[i]) for i in here])
                    hook = _restore_hook(rows, at - t, clean_states[j][at.to(clean_states.device)])
                    hooks.append((self._hook_name(site, j), hook))
        first = joined.pop(start)
        final = self.replayer.replay(start, first, joined, kwargs, cache, hooks)
        return final[:, -1]


def _restore_hook(rows: Tensor, offsets: Tensor, clean: Tensor) -> Callable[..., Tensor]:
    """Set each row's state at its offset (into the replayed positions) to its clean state."""

    def hook(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        act[rows.to(act.device), offsets.to(act.device)] = clean.to(act.dtype)
        return act

    return hook


def merge_positions(
    work: dict[int, int], n_pos: int, layer_calls: int, call_cost: float
) -> list[list[int]]:
    """Group positions into replays that minimise the modelled time (for ``cell_scores``).

    ``work[p]`` is the row-layers to replay for the cells at position p. A replay from position
    t0 costs ``call_cost`` for each of its ``layer_calls`` layer calls (in units of one row at
    one position through one layer) plus, for each row and layer, the positions t0..n_pos-1.
    (Every replay is charged the same layer calls: the most any replay of the call makes.) A
    position is then best off in the group of the nearest position before it or in a group of
    its own, so the best grouping is a partition of the sorted positions into runs: found by
    dynamic programming.
    """
    ps = sorted(work)
    best = [0.0] * (len(ps) + 1)  # best[k]: the cheapest grouping of ps[:k]
    cut = [0] * (len(ps) + 1)
    for k in range(1, len(ps) + 1):
        best[k] = math.inf
        rows = 0
        for j in range(k - 1, -1, -1):  # the last group is ps[j:k], replayed from ps[j]
            rows += work[ps[j]]
            cost = best[j] + call_cost * layer_calls + rows * (n_pos - ps[j])
            if cost < best[k]:
                best[k], cut[k] = cost, j
    groups: list[list[int]] = []
    k = len(ps)
    while k:
        groups.append(ps[cut[k] : k])
        k = cut[k]
    return groups[::-1]


class PackedEngine:
    """Many (cell, noise sample) rows per full forward pass; works on any hooked model."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def corrupted_final(
        self, setup: TraceSetup, keep: Sequence[str] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        rows = setup.corrupt.shape[0]
        kept: dict[str, Tensor] = {}
        hooks = _noise_hooks(self.model, setup, torch.arange(rows))
        with torch.set_grad_enabled(bool(keep)):
            final = self._final(setup.corrupt, [*hooks, *[(h, _saver(h, kept)) for h in keep]])
        return final, kept

    def _final(self, tokens: Tensor, hooks: list[tuple[str, Callable[..., Any]]]) -> Tensor:
        name = sites.hook_name(self.model, "final_resid")
        saved: list[Tensor] = []

        def save(act: Tensor, hook: Any) -> None:
            saved.append(act[:, -1].clone())

        self.model.run_with_hooks(tokens, fwd_hooks=[*hooks, (name, save)], return_type=None)
        return saved[0]

    @torch.no_grad()
    def row_scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        clean_states: Tensor,
        metric: Metric,
        budget: int,
        rows: Sequence[int] | None = None,
    ) -> Tensor:
        model = self.model
        samples = _selected_rows(setup, rows)
        n_rows, n_pos = len(samples), setup.corrupt.shape[1]
        units = [(i, col) for i in range(len(cells)) for col in range(len(positions))]
        d_mlp = int(model.cfg.d_mlp or 0)
        per_row = 4 * n_pos * (6 * model.cfg.d_model + 3 * d_mlp + model.cfg.d_vocab)
        out = torch.empty(len(cells), len(positions), n_rows)
        for chunk in _chunks(len(units), n_rows, max(1, budget // per_row)):
            batch = [units[k] for k in chunk]
            sample = samples.repeat(len(batch))
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
            values = trace_metric(model, final, setup, metric).reshape(len(batch), n_rows)
            for (i, col), v in zip(batch, values.float().cpu(), strict=True):
                out[i, col] = v
        return out

    def cell_scores(
        self,
        setup: TraceSetup,
        site: sites.LayerSite,
        cells: Sequence[tuple[int, range]],
        positions: Sequence[int],
        cell_rows: Sequence[Sequence[int]],
        clean_states: Tensor,
        metric: Metric,
        budget: int,
    ) -> list[Tensor]:
        """Each cell's metric at its position on its own rows (cells sharing a position and
        rows together)."""
        out = [torch.empty(len(r)) for r in cell_rows]
        groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for i, rows in enumerate(cell_rows):
            if rows:
                groups.setdefault((positions[i], tuple(rows)), []).append(i)
        for (position, rows), ids in groups.items():
            got = self.row_scores(
                setup, site, [cells[i] for i in ids], [position], clean_states, metric, budget, rows
            )
            for k, i in enumerate(ids):
                out[i] = got[k, 0]
        return out


def _packed_hook(rows: list[int], pos: list[int], clean: Tensor) -> Callable[..., Tensor]:
    r, p = torch.tensor(rows), torch.tensor(pos)

    def hook(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        act[r.to(act.device), p.to(act.device)] = clean[p.to(clean.device)].to(act.dtype)
        return act

    return hook
