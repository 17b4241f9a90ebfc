"""Letter fine-tuning: the loss is the answer letter's cross-entropy; only the last layers move."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.cognition.finetuning import FineTuneRun, finetune_letters, letter_examples, letter_loss
from mechlin.datasets.mcq import load_mcq
from mechlin.errors import OutOfRangeError
from mechlin.tiny import tiny_hf_model, tiny_tokenizer


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("tiny_base")
    tiny_hf_model(seed=0).save_pretrained(where)
    tiny_tokenizer().save_pretrained(where)
    return where


def _train_set(n: int) -> object:
    ds = load_mcq("arc_easy_test")
    keep = [
        i for i, it in enumerate(ds) if it.answer != 2 and len(it.question) < 60
    ]  # " C" is 2 tiny tokens
    return ds.subset(keep[:n])


def test_letter_loss_equals_one_at_a_time() -> None:
    model, tok = tiny_hf_model(seed=0), tiny_tokenizer()
    prompts, targets = letter_examples(tok, _train_set(4))
    batched = letter_loss(model, prompts, targets, pad_id=2)
    with torch.no_grad():
        each = [
            torch.nn.functional.cross_entropy(model(torch.tensor([p])).logits[0, -1:], t[None])
            for p, t in zip(prompts, targets, strict=True)
        ]
    torch.testing.assert_close(batched.detach(), torch.stack(each).mean(), atol=1e-5, rtol=0)


def test_finetune_moves_only_the_last_layers(base_dir: Path, tmp_path: Path) -> None:
    train = _train_set(4)
    run = finetune_letters(
        base_dir,
        train,
        tmp_path,
        steps=25,
        save_steps=(0, 25),
        lr=1e-2,
        batch_size=4,
        train_last=2,
        device="cpu",
        progress=False,
    )
    assert run.checkpoint_steps == (0, 25) and run.train_layers == (1, 2)
    assert float(run.loss[-3:].mean()) < float(run.loss[:3].mean()) - 0.5
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(run.checkpoints[0]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(run.checkpoints[1]).state_dict()
    for name, w in before.items():
        moved = not torch.equal(w, after[name])
        assert moved == ("layers.1." in name or "layers.2." in name), name
    back = FineTuneRun.load(run.save(tmp_path / "run.pt"))
    assert back.models == run.models
    # checkpoints load as hooked models and score like the base at step 0
    from mechlin.cognition.expression import score_options

    m0 = mechlin.load_model(run.checkpoints[0], device="cpu")
    ref = mechlin.tiny_model(seed=0)
    prompt = "Question: Where is Big Ben?\nAnswer:"
    torch.testing.assert_close(
        score_options(m0, prompt, [" London", " Paris"]),
        score_options(ref, prompt, [" London", " Paris"]),
        atol=1e-5,
        rtol=0,
    )


def test_bad_inputs(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(OutOfRangeError, match="save_steps"):
        finetune_letters(
            base_dir, _train_set(2), tmp_path, steps=2, save_steps=(5,), progress=False
        )
    with pytest.raises(OutOfRangeError, match="train_last"):
        finetune_letters(base_dir, _train_set(2), tmp_path, steps=1, train_last=9, progress=False)
