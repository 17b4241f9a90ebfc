"""What a model supports, proved on the model itself: no intervention may fail silently.

A hook that edits a forward pass only means something if the edit reaches the output. On some
architectures the bridge fires a hook point *after* the computation it names, as a copy: GPT-J's,
OPT's, GPT-Neo's and XGLM's ``attn.hook_attn_scores`` (and ``hook_pattern``) are fired post hoc
from the attention weights the Hugging Face module returns, so an edit there changes nothing and
attention knockout reported flat curves of 0.0. This module probes each editing site once per
model and caches the answer:

- ``edit_reaches_output(model, site)``: one batched forward on a few tokens, in which row
  ``1 + l`` perturbs ``site`` at layer ``l`` (a large random vector added at the last position;
  for ``attn_scores`` the last query's scores on every earlier key set to -inf). The edit
  reaches the output at layer ``l`` if that row's last-position logits move away from row 0's
  by far more than float rounding. A hook that did not fire counts as not reaching.
- ``knockout_route(model)``: how attention knockout edits attention on this model -
  ``"scores"`` (the bridge's pre-softmax ``hook_attn_scores``), else ``"mask"`` (a forward
  pre-hook on the Hugging Face attention module that adds -inf to its ``attention_mask`` at the
  blocked edges: the same pre-softmax intervention, for models whose bridge hooks the scores
  post hoc), each proved by the probe; else a ``NotSupportedError``.
- ``check_support(model)``: all of it as a ``ModelSupport`` report, analysis by analysis (what
  ``mechlin models --check PATH`` prints); ``require(model, analysis)`` raises the
  ``NotSupportedError`` the report names, and every analysis calls it before it runs.

Reading a site needs no probe, but it needs the right tensor: ``mechlin.sites`` maps sites the
bridge names wrongly (OPT's ``hook_mlp_out`` is the whole decoder layer's output) and
``fix_config`` corrects a ``cfg.d_mlp`` the bridge misreports (OPT: 256 for a width of 128),
from the width ``mlp.hook_post`` really has. The architecture matrix
(``tests/test_architectures.py``) checks every analysis against plain-Hugging-Face references and
writes the support table of ``docs/support.md``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mechlin import sites
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.errors import ArgumentError, MechlinError, NotSupportedError

logger = logging.getLogger(__name__)

EditSite = Literal[
    "embed", "resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_post", "attn_scores"
]
EDIT_SITES: tuple[EditSite, ...] = (
    "embed",
    "resid_pre",
    "resid_post",
    "attn_out",
    "mlp_out",
    "mlp_post",
    "attn_scores",
)
KnockoutRoute = Literal["scores", "mask"]

# Each analysis: what it covers (the public functions) and the edits it makes; analyses that
# only read activations need none.
ANALYSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "read": ("logits, hook sites, logit lens, run_with_cache", ()),
    "trace_resid": (
        "causal tracing, resid (causal_trace, attribution_patch, adaptive_trace)",
        ("embed", "resid_post"),
    ),
    "trace_mlp": ("causal tracing, mlp windows", ("embed", "mlp_out")),
    "trace_attn": ("causal tracing, attn windows", ("embed", "attn_out")),
    "knockout": (
        "attention knockout (attention_knockout, knockout_curves, dissect_recall)",
        ("knockout",),
    ),
    "extraction": ("attribute extraction, subject enrichment (extraction_rates, ...)", ()),
    "sublayer_knockout": ("sublayer_knockout_rate", ("mlp_out", "attn_out")),
    "activations": ("neuron activations, sparse probing (collect_activations, ...)", ()),
    "neuron_ablation": ("neuron ablation (classify_neurons)", ("mlp_post",)),
    "steering": (
        "steering, interchange (steer, steering_sweep, interchange_along)",
        ("resid_post",),
    ),
    "expression": ("option and letter scoring (expression_scores, ...)", ()),
}

# Gaps the architecture matrix found that no probe can see (a hook that reads the wrong tensor),
# refused by name until the bridge or mechlin maps them right.
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "BloomForCausalLM": {
        "extraction": "the bridge's attn.hook_out (attn_proj_out) is not the output of Bloom's "
        "attention projection (self_attention.dense), so per-head outputs would be wrong",
    },
}

_N_PROBE_TOKENS = 8
_edits: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, ...]]] = weakref.WeakKeyDictionary()
_routes: weakref.WeakKeyDictionary[Any, tuple[KnockoutRoute | None, str]] = (
    weakref.WeakKeyDictionary()
)


def architecture(model: Model) -> str:
    """The Hugging Face class of the wrapped model (``"GPTJForCausalLM"``), else the bridge's."""
    hf = getattr(model, "original_model", None)
    return type(hf).__name__ if hf is not None else type(model).__name__


def probe_tokens(model: Model) -> Tensor:
    """A fixed row of token ids, on the model's input device (the probes' input)."""
    from mechlin.tokens import input_device  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    d_vocab = int(model.cfg.d_vocab)
    ids = torch.randint(0, d_vocab, (1, _N_PROBE_TOKENS), generator=gen)
    return ids.to(input_device(model))


def _moved(logits: Tensor) -> list[bool]:
    """Whether each row's logits (rows 1..) differ from row 0's by more than rounding."""
    # float32 rounding of a batched forward is ~1e-6 of the scale, half precision's ~1e-2;
    # a real edit moves the logits by a sizeable share of it.
    rel = 5e-2 if logits.dtype in (torch.float16, torch.bfloat16) else 1e-3
    logits = logits.float()
    scale = float(logits[0].abs().max()) + 1e-6
    diff = (logits[1:] - logits[:1]).abs().amax(-1)
    return [bool(d > rel * scale) for d in diff]


def _edit_hook(site: str, row: int, noise: Tensor, fired: set[int]) -> Callable[..., Tensor]:
    def hook(act: Tensor, hook: Any) -> Tensor:
        fired.add(row)
        act = act.clone()
        if site == "attn_scores":  # (batch, head, query, key): block every earlier key
            act[row, :, -1, :-1] = float("-inf")
        else:
            scale = act[0, -1].float().std().clamp_min(1e-3)
            act[row, -1] += (3 * scale * noise[: act.shape[-1]]).to(act.dtype)
        return act

    return hook


@torch.no_grad()
def _probe_edit(model: Model, site: EditSite) -> tuple[int, ...]:
    """The layers at which an edit of ``site`` does not reach the output (``(0,)`` for
    ``embed``, which has none). Raises ``MissingHookError`` if the model lacks the site."""
    tokens = probe_tokens(model)
    n_layers = int(model.cfg.n_layers)
    layers = [0] if site == "embed" else list(range(n_layers))
    names = (
        [sites.hook_name(model, "embed")]
        if site == "embed"
        else [sites.hook_name(model, site, layer) for layer in layers]
    )
    gen = torch.Generator().manual_seed(1)
    width = max(int(model.cfg.d_model), int(model.cfg.d_mlp or 0), 1) * 8
    noise = torch.randn(width, generator=gen).to(tokens.device)
    fired: set[int] = set()
    hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = [
        (name, _edit_hook(site, 1 + k, noise, fired)) for k, name in enumerate(names)
    ]
    batch = tokens.expand(1 + len(names), -1)
    logits = model.run_with_hooks(batch, fwd_hooks=hooks)[:, -1]
    moved = _moved(logits)
    return tuple(layer for k, layer in enumerate(layers) if not (moved[k] and 1 + k in fired))


def edit_failures(model: Model, site: EditSite) -> tuple[int, ...]:
    """The layers at which an edit of ``site`` does not reach the output (empty: it does
    everywhere); probed once per model."""
    if site not in EDIT_SITES:
        raise ArgumentError(f"site {site!r} is not an editing site; those are {EDIT_SITES}")
    cached = _edits.setdefault(model, {})
    if site not in cached:
        try:
            cached[site] = _probe_edit(model, site)
        except MechlinError:  # the site is missing: no layer can be edited
            cached[site] = tuple(range(int(model.cfg.n_layers)))
    return cached[site]


def edit_reaches_output(model: Model, site: EditSite) -> bool:
    """Whether editing ``site`` changes the model's output at every layer (probed once)."""
    return not edit_failures(model, site)


def _attention_module(model: Model, layer: int) -> torch.nn.Module | None:
    attn = getattr(model.blocks[layer], "attn", None)
    return getattr(attn, "original_component", None)


@contextmanager
def mask_knockout(model: Model, edits: dict[int, list[tuple[Tensor, Tensor]]]) -> Iterator[None]:
    """Block attention edges through the Hugging Face attention modules' ``attention_mask``.

    ``edits[layer]`` lists (rows, sources): in those batch rows the last query may not attend
    to those key positions (-inf added before the softmax, in every head). Raises
    ``NotSupportedError`` during the forward if a layer's attention gets no 4-D mask."""

    def make(pairs: list[tuple[Tensor, Tensor]]) -> Callable[..., Any]:
        def pre_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            mask = kwargs.get("attention_mask")
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            if not isinstance(mask, Tensor) or mask.ndim != 4 or hidden is None:
                raise NotSupportedError(
                    f"{type(module).__name__} receives no 4-D attention mask to edit"
                )
            batch = hidden.shape[0]
            mask = mask.expand(batch, *mask.shape[1:]).clone()
            for rows, sources in pairs:
                r = rows.to(mask.device)[:, None]
                s = sources.to(mask.device)[None, :]
                if mask.dtype == torch.bool:
                    mask[r, :, -1, s] = False
                else:
                    mask[r, :, -1, s] = float("-inf")
            kwargs = {**kwargs, "attention_mask": mask}
            return args, kwargs

        return pre_hook

    handles = []
    try:
        for layer, pairs in edits.items():
            module = _attention_module(model, layer)
            if module is None:
                raise NotSupportedError(
                    f"{architecture(model)}: layer {layer} has no attention module to edit"
                )
            handles.append(module.register_forward_pre_hook(make(pairs), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _probe_mask(model: Model) -> tuple[int, ...]:
    tokens = probe_tokens(model)
    n_layers = int(model.cfg.n_layers)
    sources = torch.arange(tokens.shape[1] - 1)
    edits = {layer: [(torch.tensor([1 + layer]), sources)] for layer in range(n_layers)}
    with mask_knockout(model, edits):
        logits = model(tokens.expand(1 + n_layers, -1))[:, -1]
    moved = _moved(logits)
    return tuple(layer for layer in range(n_layers) if not moved[layer])


def knockout_route(model: Model) -> KnockoutRoute:
    """How attention knockout edits this model's attention (see the module docstring)."""
    if model not in _routes:
        route: KnockoutRoute | None = None
        why = ""
        failed = edit_failures(model, "attn_scores")
        if not failed:
            route = "scores"
        else:
            why = f"editing attn.hook_attn_scores changes nothing at layers {list(failed)}"
            try:
                failed_mask = _probe_mask(model)
            except (MechlinError, RuntimeError, TypeError, AttributeError) as e:
                why += f"; its attention masks cannot be edited ({e})"
            else:
                if failed_mask:
                    why += f"; editing the attention mask changes nothing at {list(failed_mask)}"
                else:
                    route = "mask"
        _routes[model] = (route, why)
    route, why = _routes[model]
    if route is None:
        raise NotSupportedError(
            f"attention knockout is not supported on {architecture(model)}: {why}, so a "
            "knockout would silently do nothing"
        )
    return route


def _reason(model: Model, needs: Sequence[str], analysis: str = "") -> str | None:
    gap = KNOWN_GAPS.get(architecture(model), {}).get(analysis)
    if gap is not None:
        return gap
    for need in needs:
        if need == "knockout":
            try:
                knockout_route(model)
            except NotSupportedError as e:
                return str(e)
            continue
        failed = edit_failures(model, need)  # type: ignore[arg-type]
        if failed:
            where = "" if need == "embed" else f" at layers {list(failed)}"
            return f"editing {need}{where} does not change the output"
    return None


def require(model: Model, analysis: str) -> None:
    """Raise ``NotSupportedError`` unless every edit ``analysis`` makes reaches the output."""
    if analysis not in ANALYSES:
        raise ArgumentError(f"unknown analysis {analysis!r}; known: {list(ANALYSES)}")
    label, needs = ANALYSES[analysis]
    reason = _reason(model, needs, analysis)
    if reason is not None:
        raise NotSupportedError(f"{label} is not supported on {architecture(model)}: {reason}")


@dataclass(frozen=True)
class ModelSupport:
    """Which analyses a model supports, probed on the model itself (``check_support``)."""

    architecture: str
    analyses: tuple[tuple[str, str | None], ...]  # (analysis key, None or why not)
    edits: tuple[tuple[str, tuple[int, ...]], ...]  # (site, layers where an edit is lost)
    knockout: str | None  # "scores", "mask" or None
    d_mlp: int

    @property
    def supported(self) -> list[str]:
        return [a for a, why in self.analyses if why is None]

    def summary(self) -> str:
        """A table of analyses (ok / not supported and why) and the probed details."""
        lines = [f"{self.architecture}: {len(self.supported)} of {len(self.analyses)} analyses"]
        for key, why in self.analyses:
            analysis = ANALYSES[key][0]
            lines.append(
                f"  {'ok ' if why is None else 'NO '} {analysis}" + (f": {why}" if why else "")
            )
        lines.append(f"  knockout via {self.knockout or 'nothing'}; d_mlp {self.d_mlp}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html  # noqa: PLC0415

        cells = [(ANALYSES[a][0], "ok" if w is None else f"no: {w}") for a, w in self.analyses]
        rows = "".join(
            f"<tr><td>{html.escape(a)}</td><td>{html.escape(v)}</td></tr>" for a, v in cells
        )
        return f"<b>{html.escape(self.architecture)}</b><table>{rows}</table>"


@checked
def check_support(model: Model) -> ModelSupport:
    """Probe ``model`` (once) and report every analysis: supported, or why not."""
    analyses = tuple((key, _reason(model, needs, key)) for key, (_, needs) in ANALYSES.items())
    try:
        route: str | None = knockout_route(model)
    except NotSupportedError:
        route = None
    return ModelSupport(
        architecture=architecture(model),
        analyses=analyses,
        edits=tuple((s, edit_failures(model, s)) for s in EDIT_SITES),
        knockout=route,
        d_mlp=int(model.cfg.d_mlp or 0),
    )


class _SeenWidth(Exception):
    """Raised by ``fix_config``'s hook to stop the forward once the width is known."""


@torch.no_grad()
def fix_config(model: Model) -> None:
    """Correct ``cfg.d_mlp`` from the width the first MLP's ``hook_post`` really has (the
    bridge reads OPT's as 4 x d_model). Called by ``load_model`` on every bridge it boots; the
    probe forward stops at that hook (one token, layer 0 only)."""
    try:
        name = sites.hook_name(model, "mlp_post", 0)
    except MechlinError:
        return
    widths: list[int] = []

    def width(act: Tensor, hook: Any) -> None:
        widths.append(int(act.shape[-1]))
        raise _SeenWidth

    try:
        model.run_with_hooks(
            probe_tokens(model)[:, :1], fwd_hooks=[(name, width)], return_type=None
        )
    except _SeenWidth:
        pass
    if widths and widths[0] != model.cfg.d_mlp:
        logger.info(
            "cfg.d_mlp %s corrected to %s (mlp.hook_post's width)", model.cfg.d_mlp, widths[0]
        )
        model.cfg.d_mlp = widths[0]
