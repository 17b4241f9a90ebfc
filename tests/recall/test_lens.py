"""The answer lens: its last entry is the model output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.recall.lens import AnswerLens, answer_lens


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
def test_last_lens_entry_is_the_model_output(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model = request.getfixturevalue(fixture)
    prompt = "The Eiffel Tower is located in the city of"
    lens = answer_lens(model, prompt, "Paris")
    assert len(lens.labels) == model.cfg.n_layers + 1
    paris = mechlin.answer_token(model, "Paris")
    with torch.no_grad():
        probs = model(prompt)[0, -1].softmax(-1)
    assert lens.probs[-1].item() == pytest.approx(probs[paris].item(), abs=1e-5)
    assert int(lens.ranks[-1]) == int((probs > probs[paris]).sum())
    again = AnswerLens.load(lens.save(tmp_path / "lens.pt"))
    assert torch.equal(again.ranks, lens.ranks) and again.labels == lens.labels
