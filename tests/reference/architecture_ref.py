"""Plain-Hugging-Face references of mechlin's interventions, for the architecture matrix.

Each runs the plain Hugging Face model (a separate instance loaded from the same folder, never
the bridge) with ordinary torch forward hooks on the modules ``tests/architectures.py`` names:
read a module's output, overwrite it at one position, add a vector, or edit the attention mask
a Hugging Face attention module receives. One row at a time, full logits, no batching tricks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


def _out(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _3d(t: Tensor, ids: Tensor) -> Tensor:
    """OPT runs its MLP on (batch * pos, d) rows: view them as (batch, pos, d)."""
    return t.view(*ids.shape, -1) if t.ndim == 2 else t


def _with(output: Any, new: Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


@contextmanager
def hooked(
    hf: Any, hooks: Sequence[tuple[str, Callable[..., Any]]], *, pre: bool = False
) -> Iterator[None]:
    handles = []
    try:
        for path, fn in hooks:
            module = hf.get_submodule(path)
            if pre:
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def outputs(hf: Any, ids: Tensor, paths: Sequence[str]) -> dict[str, Tensor]:
    """Each module's output (first element of a tuple) on ``ids``."""
    got: dict[str, Tensor] = {}

    def keep(path: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            got[path] = _3d(_out(output).detach().clone(), ids)

        return hook

    with hooked(hf, [(p, keep(p)) for p in paths]):
        hf(ids)
    return got


@torch.no_grad()
def inputs(hf: Any, ids: Tensor, paths: Sequence[str]) -> dict[str, Tensor]:
    """Each module's first input on ``ids``."""
    got: dict[str, Tensor] = {}

    def keep(path: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, kwargs: Any) -> None:
            first = args[0] if args else next(iter(kwargs.values()))
            got[path] = _3d(first.detach().clone(), ids)

        return hook

    with hooked(hf, [(p, keep(p)) for p in paths], pre=True):
        hf(ids)
    return got


@torch.no_grad()
def restored_prob(
    hf: Any, corrupt: Tensor, clean: dict[str, Tensor], position: int, answer_id: int
) -> float:
    """p(answer) at the last position of the corrupted run with each module in ``clean`` given
    its clean output at ``position``."""

    def restore(path: str) -> Callable[..., Any]:
        def hook(module: Any, args: Any, output: Any) -> Any:
            new = _out(output).clone()
            _3d(new, corrupt)[:, position] = clean[path][:, position]  # a view: edits new
            return _with(output, new)

        return hook

    with hooked(hf, [(p, restore(p)) for p in clean]):
        logits = hf(corrupt).logits[0, -1].double()
    return float(logits.softmax(-1)[answer_id])


@torch.no_grad()
def steered_logits(hf: Any, ids: Tensor, path: str, vector: Tensor, alpha: float) -> Tensor:
    """The logits with ``alpha * vector`` added to a module's output at every position."""

    def add(module: Any, args: Any, output: Any) -> Any:
        return _with(output, _out(output) + alpha * vector.to(_out(output).dtype))

    with hooked(hf, [(path, add)]):
        return hf(ids).logits[0].double()


@torch.no_grad()
def knockout_logprob(
    hf: Any, ids: Tensor, attn_paths: Sequence[str], sources: Sequence[int], answer_id: int
) -> float:
    """log p(answer) with the last query's attention to ``sources`` blocked in the attention
    modules at ``attn_paths``, through the mask each receives (-inf before the softmax; for a
    boolean mask, the value that the causal mask gives a forbidden edge)."""

    def block(module: Any, args: Any, kwargs: Any) -> Any:
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
        mask = bound.arguments.get("attention_mask")
        if mask is None and "kwargs" in bound.arguments:
            mask = bound.arguments["kwargs"].get("attention_mask")
        assert isinstance(mask, Tensor) and mask.ndim == 4, f"{type(module).__name__}: no 4-D mask"
        mask = mask.clone()
        s = torch.tensor(list(sources))
        if mask.dtype == torch.bool:
            mask[:, :, -1, s] = ~mask[0, 0, -1, -1]
        else:
            mask[:, :, -1, s] = float("-inf")
        if "attention_mask" in bound.arguments:
            bound.arguments["attention_mask"] = mask
        else:
            bound.arguments["kwargs"]["attention_mask"] = mask
        return bound.args, bound.kwargs

    with hooked(hf, [(p, block) for p in attn_paths], pre=True):
        logits = hf(ids).logits[0, -1].double()
    return float(logits.log_softmax(-1)[answer_id])


def attention_module(hf: Any, layer_path: str) -> str:
    """The path of a decoder layer's attention module (the one that receives the mask)."""
    layer = hf.get_submodule(layer_path)
    for name in ("self_attn", "attn", "attention", "self_attention"):
        if hasattr(layer, name):
            inner = getattr(layer, name)
            # GPT-Neo wraps its attention once more
            return (
                f"{layer_path}.{name}.attention"
                if hasattr(inner, "attention")
                else f"{layer_path}.{name}"
            )
    raise AssertionError(f"no attention module in {type(layer).__name__}")
