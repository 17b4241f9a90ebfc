"""Phases base -> SFT (LoRA) -> DPO on a tiny model: data, masking, merging, resume, TRL."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mechlin
from mechlin.cognition.finetuning import _load_plain
from mechlin.cognition.phases import (
    MARKER,
    DPOPair,
    PhaseRun,
    _dpo_trainer,
    _lora_model,
    completion_loss,
    dpo_loss_by_hand,
    dpo_pairs,
    dpo_tune,
    encode_example,
    sft_examples,
    sft_lora,
)
from mechlin.cognition.prompts import cloze_options, letter_options
from mechlin.datasets.facts import Fact
from mechlin.datasets.mcq import MCQDataset, load_mcq
from mechlin.errors import (
    ArgumentError,
    EmptyInputError,
    OutOfRangeError,
    StoreMismatchError,
    UnknownModelError,
)
from mechlin.tiny import tiny_hf_model, tiny_tokenizer

SFT = dict(steps=4, save_steps=(0, 2, 4), lr=1e-3, batch_size=4, progress=False)
DPO = dict(steps=3, save_steps=(0, 2, 3), lr=1e-2, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("tiny_base")
    tiny_hf_model(seed=0).save_pretrained(where)
    tiny_tokenizer().save_pretrained(where)
    return where


@pytest.fixture(scope="module")
def pool() -> MCQDataset:
    ds = load_mcq("arc_easy_test")
    return ds.subset([i for i, it in enumerate(ds) if len(it.question) < 50][:6])


@pytest.fixture(scope="module")
def examples(pool: MCQDataset) -> list:
    return sft_examples(pool, n=12, seed=0)


@pytest.fixture(scope="module")
def sft_run(base_dir: Path, examples: list, tmp_path_factory: pytest.TempPathFactory) -> PhaseRun:
    return sft_lora(base_dir, examples, out=tmp_path_factory.mktemp("sft"), **SFT)


def _weights(directory: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(directory) / "model.safetensors"))


# ---------------------------------------------------------------- data


def test_sft_examples_mix_kinds_deterministically(pool: MCQDataset) -> None:
    ex = sft_examples(pool, n=9, seed=0)
    assert [e.kind for e in ex] == ["letter", "cloze", "fact"] * 3
    assert ex == sft_examples(pool, n=9, seed=0)
    assert ex != sft_examples(pool, n=9, seed=1)
    by_id = {it.id: it for it in pool}
    for e in ex:
        assert e.prompt == e.prompt.rstrip()  # lm-eval: the space belongs to the completion
        if e.kind == "letter":
            assert e.completion == letter_options(by_id[e.source_id])[by_id[e.source_id].answer]
        elif e.kind == "cloze":
            assert e.completion == cloze_options(by_id[e.source_id])[by_id[e.source_id].answer]
        else:
            assert e.completion.startswith(" ") and e.source_id.startswith("known_")
    # the whole mix: every pool item once per MCQ kind, every shipped fact once
    everything = sft_examples(pool)
    assert sum(e.kind == "letter" for e in everything) == len(pool)
    assert sum(e.kind == "fact" for e in everything) == 1209
    # a trailing space of a given prompt moves to the completion
    own = sft_examples(
        pool, [Fact("The capital of France is ", "France", "Paris")], kinds=("fact",)
    )
    assert (own[0].prompt, own[0].completion) == ("The capital of France is", " Paris")


def test_dpo_pairs_right_against_a_seeded_wrong_option(pool: MCQDataset) -> None:
    pairs = dpo_pairs(pool, seed=0)
    assert len(pairs) == 2 * len(pool) and {p.kind for p in pairs} == {"letter", "cloze"}
    assert pairs == dpo_pairs(pool, seed=0) and pairs != dpo_pairs(pool, seed=3)
    for p, it in zip(pairs[::2], pool, strict=True):
        options = letter_options(it)
        assert p.chosen == options[it.answer] and p.rejected in options
        assert p.rejected != p.chosen


# ---------------------------------------------------------------- SFT


def test_loss_is_on_completion_tokens_only(base_dir: Path, examples: list) -> None:
    model, tok = _load_plain(base_dir, "cpu")
    batch = [encode_example(tok, e.prompt, e.completion) for e in examples[:4]]
    with torch.no_grad():
        batched = completion_loss(model, batch, pad_id=2)
        for (ids, n_prompt), got in zip(batch, batched, strict=True):
            logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)  # (pos, vocab)
            nll = [-logp[t - 1, ids[t]] for t in range(1, len(ids))]
            want = sum(nll[n_prompt - 1 :])  # the completion tokens, nothing of the prompt
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
            # one prompt token more in the mask is a visibly different loss
            assert abs(float(got - (want + nll[n_prompt - 2]))) > 1e-3


def test_lora_moves_every_layer_and_not_the_embedding(sft_run: PhaseRun) -> None:
    assert sft_run.phase == "sft" and sft_run.checkpoint_steps == (0, 2, 4)
    before, after = _weights(sft_run.checkpoints[0]), _weights(sft_run.checkpoints[-1])
    assert set(before) == set(after)
    linears = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for name, w in before.items():
        moved = not torch.equal(w, after[name])
        assert moved == any(f".{m}." in name for m in linears), name
    assert sum(f"layers.{i}." in n for n in before for i in range(3)) >= 3 * len(linears)
    # step 0 is the base itself
    base = tiny_hf_model(seed=0).state_dict()
    for name, w in before.items():
        assert torch.equal(w, base[name]), name
    assert sft_run.loss.shape == (4,) and set(sft_run.kind_loss) == {"letter", "cloze", "fact"}


def test_merged_checkpoint_gives_the_peft_logits(base_dir: Path, sft_run: PhaseRun) -> None:
    model, _ = _load_plain(base_dir, "cpu")
    peft_model = _lora_model(model, sft_run.settings)
    state = torch.load(Path(sft_run.checkpoints[-1]) / "resume_state.pt", weights_only=True)
    missing = peft_model.load_state_dict(state["adapter"], strict=False)
    assert not missing.unexpected_keys
    merged = mechlin.load_model(sft_run.checkpoints[-1], device="cpu")
    tokens = merged.to_tokens("The Eiffel Tower is located in the city of")
    with torch.no_grad():
        want = peft_model.eval()(tokens).logits
    got = merged(tokens)
    assert not torch.allclose(want, _load_plain(base_dir, "cpu")[0](tokens).logits, atol=1e-3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_sft_resume_is_bit_identical(
    base_dir: Path, examples: list, sft_run: PhaseRun, tmp_path: Path
) -> None:
    part = sft_lora(base_dir, examples, out=tmp_path, stop_after=3, **SFT)
    assert part.checkpoint_steps == (0, 2) and len(part.loss) == 3
    (tmp_path / "step-00004").mkdir()  # a half-written checkpoint: no marker
    (tmp_path / "step-00004" / "config.json").write_text("{")
    whole = sft_lora(base_dir, examples, out=tmp_path, **SFT)
    assert torch.equal(whole.loss, sft_run.loss)
    for k, v in sft_run.kind_loss.items():
        torch.testing.assert_close(whole.kind_loss[k], v, atol=0, rtol=0, equal_nan=True)
    a, b = _weights(sft_run.checkpoints[-1]), _weights(whole.checkpoints[-1])
    assert all(torch.equal(a[n], b[n]) for n in a)
    # a finished run reruns as a no-op; other settings in the same directory are refused
    assert torch.equal(sft_lora(base_dir, examples, out=tmp_path, **SFT).loss, sft_run.loss)
    with pytest.raises(StoreMismatchError, match="lr"):
        sft_lora(base_dir, examples, out=tmp_path, **{**SFT, "lr": 5e-3})


def test_phase_run_saves_and_draws(sft_run: PhaseRun, tmp_path: Path) -> None:
    back = PhaseRun.load(sft_run.save(tmp_path / "run.pt"))
    assert back.models == sft_run.models and back.settings == sft_run.settings
    assert list(back.models) == ["sft step 0", "sft step 2", "sft step 4"]
    assert "sft of" in back.summary() and len(back.to_frame()) == 4
    fig = back.plot()
    assert fig.axes
    mechlin.viz.close(fig)


# ---------------------------------------------------------------- DPO


def test_trl_dpo_loss_equals_the_closed_form(
    base_dir: Path, pool: MCQDataset, tmp_path: Path
) -> None:
    pairs = dpo_pairs(pool, seed=0)
    model, tok = _load_plain(base_dir, "cpu")
    settings = dict(
        steps=3,
        batch_size=4,
        lr=1e-2,
        beta=0.1,
        seed=0,
        r=8,
        alpha=16,
        dropout=0.0,
        target_modules="all-linear",
    )
    trainer = _dpo_trainer(
        model, tok, pairs, settings, tmp_path, device="cpu", progress=False, callbacks=[]
    )
    reference, _ = _load_plain(base_dir, "cpu")
    fixed = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])

    def trl_loss() -> torch.Tensor:
        trainer.model.eval()
        with torch.no_grad():
            return trainer.compute_loss(trainer.model, fixed).detach()

    # step 0: the fresh adapter is zero, so policy == reference and the loss is log 2
    by_hand = dpo_loss_by_hand(trainer.model, reference, tok, pairs[:4], beta=0.1)
    torch.testing.assert_close(trl_loss(), torch.tensor(math.log(2)), atol=1e-6, rtol=0)
    torch.testing.assert_close(by_hand, torch.tensor(math.log(2)), atol=1e-6, rtol=0)
    trainer.train()
    after = trl_loss()
    by_hand = dpo_loss_by_hand(trainer.model, reference, tok, pairs[:4], beta=0.1)
    assert abs(float(after) - math.log(2)) > 1e-3
    # log-probs summed over ~40 tokens of float32 logits: ~1e-5 absolute, times beta
    torch.testing.assert_close(after, by_hand, atol=2e-5, rtol=0)


def test_dpo_tune_checkpoints_and_resume(base_dir: Path, pool: MCQDataset, tmp_path: Path) -> None:
    pairs = dpo_pairs(pool, seed=0)
    whole = dpo_tune(base_dir, pairs, out=tmp_path / "a", **DPO)
    assert whole.phase == "dpo" and whole.checkpoint_steps == (0, 2, 3)
    assert len(whole.loss) == 3 and abs(float(whole.loss[0]) - math.log(2)) < 1e-4
    assert all((Path(d) / MARKER).is_file() for d in whole.checkpoints)
    before, after = _weights(whole.checkpoints[0]), _weights(whole.checkpoints[-1])
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(
        before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"]
    )
    mechlin.load_model(whole.checkpoints[-1], device="cpu")  # a loadable hooked model
    part = dpo_tune(base_dir, pairs, out=tmp_path / "b", stop_after=2, **DPO)
    assert part.checkpoint_steps == (0, 2)
    resumed = dpo_tune(base_dir, pairs, out=tmp_path / "b", **DPO)
    assert torch.equal(resumed.loss, whole.loss)
    a, b = _weights(whole.checkpoints[-1]), _weights(resumed.checkpoints[-1])
    assert all(torch.equal(a[n], b[n]) for n in a)


# ---------------------------------------------------------------- bad input


def test_bad_inputs(base_dir: Path, pool: MCQDataset, examples: list, tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError):
        sft_lora(base_dir, [], out=tmp_path, steps=1, progress=False)
    with pytest.raises(OutOfRangeError, match="save_steps"):
        sft_lora(base_dir, examples, out=tmp_path, steps=2, save_steps=(5,), progress=False)
    with pytest.raises(ArgumentError, match="bundled model name"):
        sft_lora(tmp_path / "nothing", examples, out=tmp_path, steps=1, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownModelError, match="does not hold a model"):
        sft_lora(tmp_path / "empty", examples, out=tmp_path, steps=1, progress=False)
    with pytest.raises(ArgumentError, match="embedding"):
        sft_lora(
            base_dir,
            examples,
            out=tmp_path / "x",
            steps=1,
            progress=False,
            target_modules=["q_proj", "lm_head"],
        )
    with pytest.raises(ArgumentError, match="kinds"):
        sft_examples(pool, kinds=("letter", "essay"))  # type: ignore[arg-type]
    with pytest.raises(OutOfRangeError, match="n="):
        sft_examples(pool, kinds=("letter",), n=100)
    with pytest.raises(EmptyInputError):
        dpo_pairs(MCQDataset("none", ()))
    with pytest.raises(EmptyInputError):
        dpo_tune(base_dir, [], out=tmp_path, steps=1, progress=False)
    with pytest.raises(OutOfRangeError, match="stop_after"):
        dpo_tune(
            base_dir,
            [DPOPair("Q:", " A", " B", "letter", "x")],
            out=tmp_path,
            steps=1,
            stop_after=4,
            progress=False,
        )
    shutil.rmtree(tmp_path / "empty")
