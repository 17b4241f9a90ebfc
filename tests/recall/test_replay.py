"""Layer replay: layers l.. at positions t.. after a cached prefix equal a full forward."""

from __future__ import annotations

import pytest
import torch

import mechlin
from mechlin.recall._replay import Replayer

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])  # gemma3: sliding-window layers
@pytest.mark.parametrize(("start", "t"), [(0, 0), (1, 3), (2, 7), (1, 11)])
def test_replay_equals_full_forward(fixture, start, t, request) -> None:
    model = request.getfixturevalue(fixture)
    replayer = Replayer(model)
    tokens = model.to_tokens(PROMPT).expand(2, -1)
    keys, values = replayer.run(tokens)
    names = [mechlin.hook_name(model, "resid_pre", start), mechlin.hook_name(model, "final_resid")]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
    kwargs = replayer.layer_kwargs(tokens, keys, values, t)
    rows = [torch.arange(2)] * model.cfg.n_layers
    cache_t = replayer.prefix_cache(keys, values, t, rows)
    out = replayer.replay(start, cache[names[0]][:, t:], {}, kwargs, cache_t)
    assert torch.allclose(out, cache[names[1]][:, t:], atol=1e-5)


def test_rows_joining_later_layers(tiny) -> None:
    """Rows that join at layer 2 see only layers 2.. and the right prefix rows."""
    replayer = Replayer(tiny)
    tokens = tiny.to_tokens(PROMPT)
    keys, values = replayer.run(tokens)
    pre1, pre2, final = (
        mechlin.hook_name(tiny, "resid_pre", 1),
        mechlin.hook_name(tiny, "resid_pre", 2),
        mechlin.hook_name(tiny, "final_resid"),
    )
    with torch.no_grad():
        _, cache = tiny.run_with_cache(tokens, names_filter=[pre1, pre2, final])
    t = 5
    rows = [
        torch.zeros(0, dtype=torch.long),
        torch.zeros(1, dtype=torch.long),
        torch.zeros(2, dtype=torch.long),
    ]
    kwargs = replayer.layer_kwargs(tokens, keys, values, t)
    out = replayer.replay(
        1,
        cache[pre1][:, t:],
        {2: cache[pre2][:, t:]},
        kwargs,
        replayer.prefix_cache(keys, values, t, rows),
    )
    assert out.shape[0] == 2
    assert torch.allclose(out, cache[final][:, t:].expand(2, -1, -1), atol=1e-5)


def test_models_without_decoder_layers_are_refused(tiny, monkeypatch) -> None:
    monkeypatch.setattr("mechlin.recall._replay.decoder_layers", lambda model: None)
    with pytest.raises(NotImplementedError, match="replay"):
        Replayer(tiny)
