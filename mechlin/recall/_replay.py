"""Re-run the tail of a forward pass: from a chosen layer and position on, with the rest cached.

Patching one state (layer l, position t) of a causal model cannot change the layers below l, nor
any position before t. A patched run therefore only needs the layers from l on, at positions
t.. on, with the keys and values of positions < t taken from the unpatched run. This module does
exactly that for Hugging Face decoder-only models wrapped by a ``TransformerBridge``:

1. ``Replayer(model)`` finds the decoder layers (the bridge's ``blocks`` are those very
   modules, so TransformerLens hooks fire inside them).
2. ``run(tokens, rows, hooks)`` runs the model once and keeps, per layer, the full keys and
   values (a plain ``DynamicCache``, so sliding-window layers keep every position too).
3. ``layer_kwargs(tokens, t)`` records what the model passes each layer (attention mask,
   rotary embeddings, ...) when positions t.. follow a cached prefix of length t, by calling
   the model once on a batch of one with its layers stubbed out.
4. ``replay(...)`` then calls the layers directly, from any layer on, with any number of rows,
   each layer given a cache holding the prefix keys/values of the rows it processes.

The equivalence with full forward passes is tested in ``tests/test_replay.py``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechlin import sites
from mechlin._types import Model
from mechlin.errors import NotSupportedError
from mechlin.support import probe_tokens

HookList = Sequence[tuple[str, Callable[..., Any]]]
_checked: weakref.WeakKeyDictionary[Any, tuple[bool, str]] = weakref.WeakKeyDictionary()


def decoder_layers(model: Model) -> list[torch.nn.Module] | None:
    """The HF decoder layers when they are the bridge's blocks, else None (no replay)."""
    hf = getattr(model, "original_model", None)
    layers = getattr(getattr(hf, "model", None), "layers", None)
    blocks = getattr(model, "blocks", None)
    if layers is None or blocks is None or len(layers) != len(blocks):
        return None
    if not all(a is b for a, b in zip(layers, blocks, strict=True)):
        return None
    return list(layers)


class Replayer:
    """Runs a bridge's decoder layers directly, with cached prefixes (see the module docstring)."""

    def __init__(self, model: Model) -> None:
        layers = decoder_layers(model)
        if layers is None:
            raise NotSupportedError(
                f"{type(model.original_model).__name__} has no Hugging Face decoder-layer list "
                "wrapped by the bridge; layer replay is unavailable"
            )
        from transformers import DynamicCache  # noqa: PLC0415

        self.model = model
        self.hf = model.original_model
        self.layers = layers
        self._cache_cls = DynamicCache
        self._points: dict[str, Any] = {}  # hook name -> HookPoint, resolved once

    @contextmanager
    def _hooks(self, hooks: HookList) -> Iterator[None]:
        """Forward hooks for the duration of a run: what ``model.hooks`` does for the names
        the engines pass (plain hook points, not filters), without its per-call price. The
        bridge's context rebuilds the whole hook dictionary with its aliases twice per call
        (~2.4 ms with 30 hooks on smollm2); the engines enter it once per batch of a replay,
        which adaptive tracing's scattered restorations run many of. The hook points are
        resolved once through ``model.hook_dict`` and attached and removed as the bridge's
        context does (the same ``add_hook``, with the alias names in compatibility mode)."""
        added = []
        try:
            for name, fn in hooks:
                point = self._points.get(name)
                if point is None:
                    point = self._points[name] = self.model.hook_dict[name]
                aliases = None
                if getattr(self.model, "compatibility_mode", False) and name != point.name:
                    aliases = [n for n in (point.name, name) if n is not None]
                added.append((point, point.add_hook(fn, dir="fwd", alias_names=aliases)))
            yield
        finally:
            for point, handle in added:
                handle.hook.remove()
                point.fwd_hooks[:] = [h for h in point.fwd_hooks if h is not handle]

    def run(
        self, tokens: Tensor, hooks: HookList = (), *, grad: bool = False
    ) -> tuple[list[Float[Tensor, "batch kv_head pos d_head"]], list[Tensor]]:
        """Full forward of ``tokens`` [batch, pos]; returns every layer's keys and values
        (detached). ``grad=True`` records autograd, for hooks that keep activations to
        differentiate (the values computed are the same bit for bit: tests)."""
        cache = self._cache_cls()
        base = self.hf.model  # the decoder without the unembedding: no logits are needed
        with torch.set_grad_enabled(grad), self._hooks(hooks):
            base(input_ids=tokens, past_key_values=cache, use_cache=True)  # type: ignore[operator]
        keys = [layer.keys.detach() for layer in cache.layers]  # type: ignore[union-attr]
        values = [layer.values.detach() for layer in cache.layers]  # type: ignore[union-attr]
        return keys, values

    def prefix_cache(
        self, keys: Sequence[Tensor], values: Sequence[Tensor], t: int, rows: Sequence[Tensor]
    ) -> Any:
        """A cache holding positions < t; layer j's batch is ``keys[j][rows[j]]``."""
        cache = self._cache_cls()
        if t == 0:
            return cache
        for j, (k, v) in enumerate(zip(keys, values, strict=True)):
            idx = rows[j]
            cache.update(k[idx, :, :t], v[idx, :, :t], j)
        return cache

    @torch.no_grad()
    def layer_kwargs(
        self, tokens: Tensor, keys: Sequence[Tensor], values: Sequence[Tensor], t: int
    ) -> list[dict[str, Any]]:
        """What the model passes each layer when positions t.. follow a cached prefix of t.

        The model's forward computes every layer's arguments (attention masks, rotary
        embeddings, cache positions) before its loop over the layers, so the layers themselves
        are stubbed out for this one call (each returns its input): the arguments are recorded
        at the cost of the embedding and the final norm, not of a forward pass.
        """
        recorded: dict[int, dict[str, Any]] = {}

        def record(j: int) -> Callable[..., None]:
            def pre_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                kw = dict(kwargs)
                kw.pop("hidden_states", None)
                kw.pop("past_key_values", None)
                if len(args) > 1:
                    raise NotSupportedError("decoder layer takes extra positional arguments")
                recorded[j] = kw

            return pre_hook

        def identity(*args: Any, **kwargs: Any) -> Any:
            return args[0] if args else kwargs["hidden_states"]

        handles = [
            layer.register_forward_pre_hook(record(j), with_kwargs=True)
            for j, layer in enumerate(self.layers)
        ]
        one = [torch.zeros(1, dtype=torch.long, device=tokens.device)] * len(self.layers)
        for layer in self.layers:
            # an instance attribute shadows the class's forward (set past the bridge's own
            # __setattr__, which forwards attributes to the wrapped module)
            object.__setattr__(layer, "forward", identity)
        try:
            cache = self.prefix_cache(keys, values, t, one)
            base = self.hf.model  # the decoder without the unembedding
            base(input_ids=tokens[:1, t:], past_key_values=cache, use_cache=True)  # type: ignore[operator]
        finally:
            for layer in self.layers:
                vars(layer).pop("forward", None)
            for h in handles:
                h.remove()
        return [recorded[j] for j in range(len(self.layers))]

    @torch.no_grad()
    def replay(
        self,
        start_layer: int,
        hidden: Float[Tensor, "rows pos d_model"],
        joins: dict[int, Tensor],  # each (joining_rows, pos, d_model)
        kwargs: Sequence[dict[str, Any]],
        cache: Any,
        hooks: HookList = (),
    ) -> Float[Tensor, "all_rows pos d_model"]:
        """Run layers ``start_layer..`` on ``hidden``; rows in ``joins[j]`` join before layer j.

        ``cache`` must hold, for every layer j, the prefix of exactly the rows that layer
        processes, in order: the rows of ``hidden``, then those of each join up to j. Returns
        the residual stream after the last layer (joins at ``n_layers`` are appended to it).
        """
        with self._hooks(hooks):
            for j in range(start_layer, len(self.layers)):
                if j in joins:
                    hidden = torch.cat([hidden, joins[j]]) if hidden.numel() else joins[j]
                out = self.layers[j](hidden, past_key_values=cache, **kwargs[j])
                hidden = out[0] if isinstance(out, tuple) else out
        n = len(self.layers)
        if n in joins:
            hidden = torch.cat([hidden, joins[n]]) if hidden.numel() else joins[n]
        return hidden


@torch.no_grad()
def _probe_replay(model: Model) -> None:
    """Replay a few probe tokens from layer 0 and position t and compare with a full forward."""
    replayer = Replayer(model)
    tokens = probe_tokens(model)
    n_layers = int(model.cfg.n_layers)
    saved: dict[str, Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(act: Tensor, hook: Any) -> None:
            saved[name] = act.detach().clone()

        return hook

    pre = sites.hook_name(model, "resid_pre", 0)
    post = sites.hook_name(model, "resid_post", n_layers - 1)
    keys, values = replayer.run(tokens, [(pre, keep(pre)), (post, keep(post))])
    t = tokens.shape[1] // 2
    kwargs = replayer.layer_kwargs(tokens, keys, values, t)
    rows = [torch.zeros(1, dtype=torch.long, device=tokens.device)] * n_layers
    cache = replayer.prefix_cache(keys, values, t, rows)
    got = replayer.replay(0, saved[pre][:, t:], {}, kwargs, cache)
    want = saved[post][:, t:]
    err = float((got.float() - want.float()).abs().max())
    scale = float(want.float().abs().max()) + 1e-6
    if not err <= 1e-4 * scale:
        raise NotSupportedError(f"a replay differs from the full forward by {err:.2e}")


def replay_supported(model: Model) -> bool:
    """Whether the replay reproduces a full forward on this model (probed once per model):
    ``causal_trace(method="auto")`` uses the packed engine where it does not (XGLM's decoder
    layers take positional arguments; GPT-2's blocks are not the bridge's)."""
    if model not in _checked:
        try:
            _probe_replay(model)
            _checked[model] = (True, "")
        except Exception as e:  # any failure of the fast path means: use the packed engine
            _checked[model] = (False, f"{type(e).__name__}: {e}")
    return _checked[model][0]
