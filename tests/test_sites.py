"""Named hook access: every site resolves on real architectures; missing hooks fail clearly."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from jaxtyping import TypeCheckError

import mechlin
from mechlin.sites import LayerSite, ModelSite

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
def test_every_site_fires_with_the_documented_shape(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(fixture)
    cfg = model.cfg
    layer = cfg.n_layers - 1
    names = [mechlin.hook_name(model, s, layer) for s in get_args(LayerSite)]
    names += [mechlin.hook_name(model, s) for s in get_args(ModelSite)]
    tokens = model.to_tokens(PROMPT)
    n_pos = tokens.shape[1]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    shape = {n: tuple(cache[n].shape) for n in names}
    site = dict(zip([*get_args(LayerSite), *get_args(ModelSite)], names, strict=True))
    assert shape[site["resid_post"]] == (1, n_pos, cfg.d_model)
    assert shape[site["attn_out"]] == (1, n_pos, cfg.d_model)
    assert shape[site["mlp_post"]] == (1, n_pos, cfg.d_mlp)
    assert shape[site["attn_pattern"]] == (1, cfg.n_heads, n_pos, n_pos)
    assert shape[site["logits"]] == tuple(logits.shape)
    # Decomposition: resid_post = resid_pre + attn_out + mlp_out.
    with torch.no_grad():
        _, c = model.run_with_cache(
            tokens,
            names_filter=[
                mechlin.hook_name(model, s, layer)
                for s in ("resid_pre", "attn_out", "mlp_out", "resid_post")
            ],
        )
    parts = [c[mechlin.hook_name(model, s, layer)] for s in ("resid_pre", "attn_out", "mlp_out")]
    total = c[mechlin.hook_name(model, "resid_post", layer)]
    assert torch.allclose(sum(parts), total, atol=1e-5)  # type: ignore[arg-type]


def test_layer_out_of_range(tiny: object) -> None:
    with pytest.raises(IndexError, match=r"layers 0\.\.2"):
        mechlin.hook_name(tiny, "attn_out", 3)
    assert mechlin.hook_name(tiny, "attn_out", -1) == "blocks.2.hook_attn_out"


def test_site_arguments_are_checked(tiny: object) -> None:
    with pytest.raises(ValueError, match="per layer"):
        mechlin.hook_name(tiny, "attn_out")
    with pytest.raises(ValueError, match="not per layer"):
        mechlin.hook_name(tiny, "embed", 0)
    # Under the test run's runtime type checking the Literal annotation rejects it first.
    with pytest.raises((ValueError, TypeCheckError)):
        mechlin.hook_name(tiny, "attention", 0)  # type: ignore[arg-type]


def test_missing_hook_names_the_closest(tiny: object, monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = dict(tiny.hook_dict)  # type: ignore[attr-defined]
    del hooks["blocks.1.mlp.hook_post"]
    monkeypatch.setattr(type(tiny), "hook_dict", property(lambda self: hooks))
    with pytest.raises(mechlin.MissingHookError, match=r"blocks\.1\.mlp\.hook_p"):
        mechlin.hook_name(tiny, "mlp_post", 1)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
def test_unembed_of_final_residual_is_the_output(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(fixture)
    name = mechlin.hook_name(model, "final_resid")
    with torch.no_grad():
        logits, cache = model.run_with_cache(model.to_tokens(PROMPT), names_filter=[name])
    assert torch.allclose(mechlin.unembed(model, cache[name]), logits, atol=1e-5)
