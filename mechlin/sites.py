"""Named access to the places analyses read and patch, so nobody builds hook-name strings by hand.

A *site* is a kind of activation (``"attn_out"``, ``"mlp_post"``, ...); per-layer sites take a
layer index. ``hook_name(model, "mlp_post", 3)`` returns ``"blocks.3.mlp.hook_post"`` after
checking that the model really has that hook point, and raises ``MissingHookError`` (with the
hook points it does have) when it does not. The vocabulary is TransformerLens's:

| site           | hook point                           | shape                        |
|----------------|--------------------------------------|------------------------------|
| resid_pre      | blocks.{l}.hook_resid_pre            | batch pos d_model            |
| resid_mid      | blocks.{l}.hook_resid_mid            | batch pos d_model            |
| resid_post     | blocks.{l}.hook_resid_post           | batch pos d_model            |
| attn_out       | blocks.{l}.hook_attn_out             | batch pos d_model            |
| attn_proj_out  | blocks.{l}.attn.hook_out (before any | batch pos d_model            |
|                | post-attention norm, e.g. Gemma's)   |                              |
| mlp_out        | blocks.{l}.hook_mlp_out              | batch pos d_model            |
| mlp_pre        | blocks.{l}.mlp.hook_pre              | batch pos d_mlp              |
| mlp_post       | blocks.{l}.mlp.hook_post (neurons)   | batch pos d_mlp              |
| attn_scores    | blocks.{l}.attn.hook_attn_scores     | batch head query_pos key_pos |
| attn_pattern   | blocks.{l}.attn.hook_pattern         | batch head query_pos key_pos |
| q, k, v, z     | blocks.{l}.attn.hook_{q,k,v,z}       | batch pos head d_head        |
| embed          | hook_embed (token embeddings)        | batch pos d_model            |
| final_resid    | ln_final.hook_in                     | batch pos d_model            |
| final_norm     | ln_final.hook_normalized             | batch pos d_model            |
| unembed_in     | unembed.hook_in (the final norm's    | batch pos d_model            |
|                | output, as the unembedding reads it) |                              |
| logits         | unembed.hook_out                     | batch pos d_vocab            |
"""

from __future__ import annotations

import difflib
from typing import Literal, get_args

from jaxtyping import Float, Int
from torch import Tensor

from mechlin._checks import checked
from mechlin._types import Model
from mechlin.errors import ArgumentError, MissingHookError, OutOfRangeError

LayerSite = Literal[
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "attn_proj_out",
    "mlp_out",
    "mlp_pre",
    "mlp_post",
    "attn_scores",
    "attn_pattern",
    "q",
    "k",
    "v",
    "z",
]
ModelSite = Literal["embed", "final_resid", "final_norm", "unembed_in", "logits"]
Site = LayerSite | ModelSite

_LAYER_PATTERNS: dict[str, str] = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "attn_proj_out": "blocks.{layer}.attn.hook_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "mlp_pre": "blocks.{layer}.mlp.hook_pre",
    "mlp_post": "blocks.{layer}.mlp.hook_post",
    "attn_scores": "blocks.{layer}.attn.hook_attn_scores",
    "attn_pattern": "blocks.{layer}.attn.hook_pattern",
    "q": "blocks.{layer}.attn.hook_q",
    "k": "blocks.{layer}.attn.hook_k",
    "v": "blocks.{layer}.attn.hook_v",
    "z": "blocks.{layer}.attn.hook_z",
}
_MODEL_NAMES: dict[str, str] = {
    "embed": "hook_embed",
    "final_resid": "ln_final.hook_in",
    "final_norm": "ln_final.hook_normalized",
    "unembed_in": "unembed.hook_in",
    "logits": "unembed.hook_out",
}
assert set(_LAYER_PATTERNS) == set(get_args(LayerSite))
assert set(_MODEL_NAMES) == set(get_args(ModelSite))


def n_layers(model: Model) -> int:
    return int(model.cfg.n_layers)


def check_layer(model: Model, layer: int) -> int:
    """Return ``layer`` as a non-negative index, or raise if the model has no such layer."""
    n = n_layers(model)
    if not -n <= layer < n:
        raise OutOfRangeError(f"layer {layer} is out of range: the model has layers 0..{n - 1}")
    return layer % n


@checked
def hook_name(model: Model, site: Site, layer: int | None = None) -> str:
    """The hook point of ``site`` (at ``layer`` for per-layer sites), checked to exist."""
    if site in _LAYER_PATTERNS:
        if layer is None:
            raise ArgumentError(f"site {site!r} is per layer: pass layer=")
        name = _LAYER_PATTERNS[site].format(layer=check_layer(model, layer))
    elif site in _MODEL_NAMES:
        if layer is not None:
            raise ArgumentError(f"site {site!r} is not per layer: do not pass layer=")
        name = _MODEL_NAMES[site]
    else:
        raise ArgumentError(
            f"unknown site {site!r}; sites are {sorted(_LAYER_PATTERNS) + sorted(_MODEL_NAMES)}"
        )
    if site == "mlp_out" and _mlp_wraps_layer(model, check_layer(model, layer or 0)):
        # OPT, XGLM: the bridge's MLP component wraps the whole decoder layer, so its
        # hook_out (and the hook_mlp_out alias) is the layer's output, not the MLP's. The
        # MLP's output is its output projection's (fc2).
        name = f"blocks.{check_layer(model, layer or 0)}.mlp.out.hook_out"
    hooks = model.hook_dict
    if name not in hooks:
        close = difflib.get_close_matches(name, list(hooks), n=5)
        raise MissingHookError(
            f"this model ({type(model).__name__}) has no hook point {name!r} for site {site!r}. "
            f"Closest hook points it has: {close}"
        )
    return name


def _mlp_wraps_layer(model: Model, layer: int) -> bool:
    """Whether the bridge's ``blocks[layer].mlp`` wraps the whole decoder layer (OPT, XGLM)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or layer >= len(blocks):
        return False
    block = blocks[layer]
    mlp = getattr(block, "mlp", None)
    inner = getattr(mlp, "original_component", None)
    return inner is not None and inner is getattr(block, "original_component", None)


@checked
def hook_names(model: Model, site: LayerSite) -> list[str]:
    """The hook point of a per-layer ``site`` in every layer, in layer order."""
    return [hook_name(model, site, layer) for layer in range(n_layers(model))]


@checked
def unembed(
    model: Model,
    resid: Float[Tensor, "... d_model"],
    *,
    apply_norm: bool = True,
    grad: bool = False,
) -> Float[Tensor, "... d_vocab"]:
    """Read residual-stream vectors as logits: the model's final norm, then its unembedding.

    With ``apply_norm=True`` this is exactly what the model does to its last residual state
    (the logit lens); ``False`` skips the final norm (as Geva et al.'s original projections do).
    ``grad=True`` records autograd (to differentiate the logits); by default it does not.
    """
    from transformer_lens.tools.analysis import logit_readout  # noqa: PLC0415

    d_model = int(model.cfg.d_model)
    if resid.ndim == 0 or resid.shape[-1] != d_model:
        raise ArgumentError(
            f"resid has shape {tuple(resid.shape)}: its last dimension must be the model's "
            f"d_model ({d_model})"
        )
    readout = logit_readout(
        model, resid, apply_ln=apply_norm, return_type="logits", enable_grad=grad
    )
    return readout.values


def str_tokens(model: Model, ids: Int[Tensor, " pos"]) -> list[str]:
    """The text of each token of one row of ids, as the model's tokenizer shows it."""
    return [str(t) for t in model.to_str_tokens(ids)]


def unembedding_matrix(model: Model) -> Tensor:
    """The model's unembedding ``W_U`` (d_model, d_vocab), detached, shape checked."""
    w_u = model.W_U
    if w_u.ndim != 2 or w_u.shape[0] != model.cfg.d_model:
        raise ArgumentError(f"expected W_U of shape (d_model, d_vocab), got {tuple(w_u.shape)}")
    return w_u.detach()
