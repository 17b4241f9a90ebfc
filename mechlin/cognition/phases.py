"""The offline phase series of Yan et al.: base -> supervised fine-tuning -> preference tuning.

Yan et al. (2024) follow Baichuan through its pretraining, SFT and RLHF (PPO) checkpoints and
find that cognition (what a linear probe reads from the hidden states) is set in pretraining
while expression (the model's own answers) grows in SFT and RLHF. No such series is available
offline, so this module makes one from a small base model:

1. ``sft_examples`` mixes supervised data: letter answers (``letter_prompt`` -> ``" B"``), cloze
   answers (``cloze_context`` -> the right ``cloze_options`` text) and fact completions (ROME's
   shipped ``known_1000`` prompts -> ``" " + attribute``), interleaved round-robin in a seeded
   order. lm-eval's token boundary holds: trailing whitespace of a prompt moves to its
   completion.
2. ``sft_lora`` trains a LoRA adapter on every attention and MLP linear of every layer (the tied
   embedding / unembedding are never adapted) with a plain torch AdamW loop. The loss is the
   cross-entropy of the completion tokens only (prompt tokens are masked): summed over each
   example's completion tokens, then averaged over the batch, so an example weighs by how much
   text it must produce, not by its prompt length, and a one-token letter answer counts as
   much as one token of a fact. No EOS is appended (the readouts score the answer, not what
   follows it).
3. ``dpo_pairs`` / ``dpo_tune``: preference tuning with TRL's ``DPOTrainer``, the offline
   stand-in for the paper's PPO (no reward model or sampling is needed; DPO optimises the same
   KL-regularised reward objective in closed form). Chosen = the right option, rejected = one
   wrong option drawn by seed. The reference is the SFT checkpoint itself: the policy is a fresh
   LoRA adapter on it, and TRL computes the reference log-probs with the adapter disabled.
   ``dpo_loss_by_hand`` is the closed form, for checking TRL (which appends EOS to both
   completions and splits prompt from completion at the common token prefix; matched here).

Checkpoints. At every step of ``save_steps`` (step 0 = the base itself) the adapter is merged
into a deep copy of the model (``merge_and_unload``) and ``out/step-{k:05d}`` receives
``save_pretrained`` of model and tokenizer, loadable with ``mechlin.load_model(dir)``, plus the
resume state; ``phase.json`` is written last, so a directory without it is half-written and is
redone. A rerun with the same ``out=`` and settings continues from the last complete step and
gives bit-identical results to an uninterrupted run (other settings raise
``StoreMismatchError``); ``stop_after=`` stops early (an interrupted run in miniature).

Pitfalls: train on items disjoint from every evaluated one (the caller must check; mechlin
trains on ``arc_easy_test``). Letter fine-tuning of the last layers only (``finetune_letters``)
is the negative control: ``PhaseRun.from_finetune`` labels it so.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin._store import write_json
from mechlin.cognition.finetuning import FineTuneRun, _load_plain
from mechlin.cognition.prompts import cloze_context, cloze_options, letter_options, letter_prompt
from mechlin.datasets.facts import FactLike, as_facts, load_known_1000
from mechlin.datasets.mcq import MCQDataset
from mechlin.errors import (
    ArgumentError,
    EmptyInputError,
    OutOfRangeError,
    StoreMismatchError,
    TokenizationError,
    UnknownModelError,
)
from mechlin.results import Result

SFTKind = Literal["letter", "cloze", "fact"]
DPOFormat = Literal["letter", "cloze"]
Phase = Literal["sft", "dpo", "negative control"]
MARKER = "phase.json"  # written last into each checkpoint directory
_STATE = "resume_state.pt"  # adapter weights and optimizer state (sft) beside the merged model


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class SFTExample:
    """One supervised example: the loss is on ``completion``'s tokens after ``prompt``."""

    prompt: str
    completion: str
    kind: str  # "letter", "cloze" or "fact"
    source_id: str  # the MCQ item id, or "known_{id}" for a fact


@dataclass(frozen=True)
class DPOPair:
    """One preference pair: ``chosen`` is preferred to ``rejected`` after ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    kind: str  # "letter" or "cloze"
    source_id: str


def _boundary(prompt: str, completion: str) -> tuple[str, str]:
    """lm-eval's boundary: trailing whitespace of the prompt moves to the completion."""
    n = len(prompt) - len(prompt.rstrip())
    return (prompt[:-n], prompt[-n:] + completion) if n else (prompt, completion)


def _check_kinds(kinds: Sequence[str], allowed: tuple[str, ...], what: str) -> None:
    if not kinds:
        raise EmptyInputError(f"{what} is empty: name at least one of {allowed}")
    bad = [k for k in kinds if k not in allowed]
    if bad or len(set(kinds)) != len(kinds):
        raise ArgumentError(f"{what}={tuple(kinds)!r}: each must be one of {allowed}, once")


@checked
def sft_examples(
    pool: MCQDataset,
    facts: Iterable[FactLike] | None = None,
    *,
    kinds: Sequence[SFTKind] = ("letter", "cloze", "fact"),
    n: int | None = None,
    seed: int = 0,
) -> list[SFTExample]:
    """Mixed supervised examples from ``pool`` (letter, cloze) and ``facts`` (default: ROME's
    shipped ``known_1000``), each kind shuffled by ``seed`` and interleaved round-robin in the
    order of ``kinds`` (so every prefix is balanced until a kind runs out); ``n`` keeps the first
    ``n``. A fact's completion is ``" " + attribute`` after its prompt without trailing
    whitespace (one space, never two); facts without an attribute are left out."""
    _check_kinds(kinds, ("letter", "cloze", "fact"), "kinds")
    rng = np.random.default_rng(seed)
    by_kind: list[list[SFTExample]] = []
    for kind in kinds:
        if kind == "fact":
            chosen = [f for f in (load_known_1000() if facts is None else as_facts(facts))]
            made = [
                SFTExample(
                    f.prompt.rstrip(),
                    " " + f.attribute.strip(),
                    "fact",
                    f"known_{f.known_id}" if f.known_id >= 0 else f"fact_{i}",
                )
                for i, f in enumerate(chosen)
                if f.attribute.strip()
            ]
        elif kind == "letter":
            made = [
                SFTExample(
                    *_boundary(letter_prompt(it), letter_options(it)[it.answer]), "letter", it.id
                )
                for it in pool
            ]
        else:
            made = [
                SFTExample(
                    *_boundary(cloze_context(it), cloze_options(it)[it.answer]), "cloze", it.id
                )
                for it in pool
            ]
        if not made:
            raise EmptyInputError(f"no {kind!r} examples: the pool (or fact list) is empty")
        by_kind.append([made[int(i)] for i in rng.permutation(len(made))])
    mixed = [ex[i] for i in range(max(len(ex) for ex in by_kind)) for ex in by_kind if i < len(ex)]
    if n is not None:
        if not 1 <= n <= len(mixed):
            raise OutOfRangeError(f"n={n}: there are {len(mixed)} examples of kinds {kinds}")
        mixed = mixed[:n]
    return mixed


@checked
def dpo_pairs(
    pool: MCQDataset, *, formats: Sequence[DPOFormat] = ("letter", "cloze"), seed: int = 0
) -> list[DPOPair]:
    """One pair per item and format: the right option against one wrong option (seeded)."""
    _check_kinds(formats, ("letter", "cloze"), "formats")
    if len(pool) == 0:
        raise EmptyInputError(f"the pool {pool.name!r} is empty")
    rng = np.random.default_rng(seed)
    pairs = []
    for it in pool:
        wrong = [i for i in range(len(it.choices)) if i != it.answer]
        for fmt in formats:
            bad = wrong[int(rng.integers(len(wrong)))]
            prompt, options = (
                (letter_prompt(it), letter_options(it))
                if fmt == "letter"
                else (cloze_context(it), cloze_options(it))
            )
            p, good = _boundary(prompt, options[it.answer])
            pairs.append(DPOPair(p, good, _boundary(prompt, options[bad])[1], fmt, it.id))
    return pairs


# ------------------------------------------------------------------------------ the result


@dataclass(frozen=True)
class PhaseRun(Result):
    """The loss curve of one phase (SFT, DPO, or the letter control) and its checkpoints."""

    phase: Phase
    base: str
    loss: Float[Tensor, " step"]  # training loss of each optimizer step (1-based steps)
    kind_loss: dict[str, Float[Tensor, " step"]]  # per-kind loss; NaN where a batch lacked it
    checkpoint_steps: tuple[int, ...]
    checkpoints: tuple[str, ...]  # directories, loadable with mechlin.load_model
    settings: dict[str, Any]
    n_examples: int
    seconds: float  # wall time of this call (a resumed run counts only the part it ran)

    _nonfinite = frozenset({"kind_loss"})

    def __post_init__(self) -> None:
        if len(self.checkpoint_steps) != len(self.checkpoints):
            raise ArgumentError("one checkpoint directory per checkpoint step is needed")
        if self.loss.ndim != 1 or any(v.shape != self.loss.shape for v in self.kind_loss.values()):
            raise ArgumentError("loss and each kind's loss must be one value per step")

    @property
    def models(self) -> dict[str, str]:
        """``{"sft step N": directory}`` for ``cognition_vs_expression``."""
        return {
            f"{self.phase} step {s}": d
            for s, d in zip(self.checkpoint_steps, self.checkpoints, strict=True)
        }

    @classmethod
    def from_finetune(cls, run: FineTuneRun) -> PhaseRun:
        """A ``finetune_letters`` run, labelled as the negative control."""
        return cls(
            phase="negative control",
            base=run.base,
            loss=run.loss,
            kind_loss={"letter": run.loss},
            checkpoint_steps=run.checkpoint_steps,
            checkpoints=run.checkpoints,
            settings=dict(lr=run.lr, batch_size=run.batch_size, train_layers=run.train_layers),
            n_examples=run.n_train_items,
            seconds=run.seconds,
        )

    def summary(self) -> str:
        k = max(1, len(self.loss) // 5)
        first = float(self.loss[:k].mean()) if len(self.loss) else math.nan
        last = float(self.loss[-k:].mean()) if len(self.loss) else math.nan
        kinds = ", ".join(
            f"{name} {float(v[~v.isnan()][-k:].mean()):.3f}"
            for name, v in self.kind_loss.items()
            if bool((~v.isnan()).any())
        )
        return (
            f"{self.phase} of {self.base}: {len(self.loss)} steps on {self.n_examples} "
            f"examples, {self.seconds:.0f} s\n  loss {first:.3f} -> {last:.3f} (last by kind: "
            f"{kinds}); checkpoints at steps {list(self.checkpoint_steps)}"
        )

    def plot(self, ax: Any = None) -> Any:
        fig, ax = viz.axes(ax, figsize=(6, 3.5))
        steps = list(range(1, len(self.loss) + 1))
        ax.plot(steps, self.loss.tolist(), ".-", color="black", label="all")
        if len(self.kind_loss) > 1:
            for name, v in self.kind_loss.items():
                ax.plot(steps, v.tolist(), ".", alpha=0.6, label=name)
        for s in self.checkpoint_steps:
            ax.axvline(s, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("step")
        ax.set_ylabel("DPO loss" if self.phase == "dpo" else "completion cross-entropy")
        ax.set_title(f"{self.phase} of {Path(self.base).name}")
        ax.legend(fontsize=8)
        return fig

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        cols = {f"loss_{k}": v.tolist() for k, v in self.kind_loss.items()}
        steps = range(1, len(self.loss) + 1)
        return pd.DataFrame(dict(step=steps, loss=self.loss.tolist(), **cols))


# ------------------------------------------------------------------------------ shared plumbing


def _check_run(
    n: int, steps: int, save_steps: Sequence[int] | None, stop_after: int | None, what: str
) -> list[int]:
    if n == 0:
        raise EmptyInputError(f"no {what} given: pass a non-empty list")
    if steps < 1:
        raise OutOfRangeError(f"steps must be >= 1, got {steps}")
    save = sorted(set(save_steps if save_steps is not None else (0, steps // 2, steps)))
    if save and (save[0] < 0 or save[-1] > steps):
        raise OutOfRangeError(f"save_steps must lie in 0..steps={steps}, got {save}")
    if stop_after is not None and not 0 <= stop_after <= steps:
        raise OutOfRangeError(f"stop_after={stop_after} must lie in 0..steps={steps}")
    return save


def _fingerprint(items: Sequence[Any]) -> str:
    text = json.dumps([asdict(x) for x in items], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _step_dir(out: Path, step: int) -> Path:
    return out / f"step-{step:05d}"


def _complete(out: Path, step: int, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of a complete checkpoint ``step`` (None when absent or half-written)."""
    marker = _step_dir(out, step) / MARKER
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text())
    if data.get("settings") != settings:
        diff = sorted(k for k in settings if data.get("settings", {}).get(k) != settings[k])
        raise StoreMismatchError(
            f"{marker.parent} was written with other settings (differing: {diff}); use a new "
            "out= directory, or the same settings to resume"
        )
    return data


def _lora_config(r: int, alpha: int, dropout: float, target_modules: str | Sequence[str]) -> Any:
    from peft import LoraConfig  # noqa: PLC0415

    if r < 1 or not 0 <= dropout < 1:
        raise OutOfRangeError(f"LoRA needs r >= 1 and dropout in [0, 1): r={r}, dropout={dropout}")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _check_adapted(peft_model: Any) -> None:
    """Every layer's linears carry an adapter; the (tied) embedding and unembedding do not."""
    from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: PLC0415

    inner = peft_model.get_base_model()
    if isinstance(inner.get_output_embeddings(), BaseTunerLayer) or isinstance(
        inner.get_input_embeddings(), BaseTunerLayer
    ):
        raise ArgumentError(
            "target_modules adapts the embedding or the unembedding (tied in the bundled models): "
            "leave them out ('all-linear' does)"
        )
    for i, layer in enumerate(inner.model.layers):
        if not any(isinstance(m, BaseTunerLayer) for m in layer.modules()):
            raise ArgumentError(f"target_modules adapts nothing in layer {i}")


def _load_base(base: str | os.PathLike[str], device: str) -> tuple[Any, Any]:
    """The plain Hugging Face model and tokenizer of ``base``; a directory that holds no model
    is an ``UnknownModelError``."""
    try:
        return _load_plain(base, device)
    except ArgumentError:
        raise
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ...
        raise UnknownModelError(
            f"{str(base)!r} does not hold a model written by save_pretrained "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        ) from None


def _save_merged(peft_model: Any, tokenizer: Any, where: Path) -> None:
    merged = copy.deepcopy(peft_model).merge_and_unload()
    if not merged.config.architectures:
        merged.config.architectures = [type(merged).__name__]
    merged.save_pretrained(str(where))
    tokenizer.save_pretrained(str(where))


def _run(
    phase: Phase,
    base: Any,
    out: Path,
    save: list[int],
    losses: list[float],
    kind_loss: dict[str, list[float]],
    settings: dict[str, Any],
    n: int,
    seconds: float,
) -> PhaseRun:
    done = [s for s in save if (_step_dir(out, s) / MARKER).is_file()]
    return PhaseRun(
        phase=phase,
        base=str(base),
        loss=torch.tensor(losses, dtype=torch.float32),
        kind_loss={k: torch.tensor(v, dtype=torch.float32) for k, v in kind_loss.items()},
        checkpoint_steps=tuple(done),
        checkpoints=tuple(str(_step_dir(out, s)) for s in done),
        settings=settings,
        n_examples=n,
        seconds=seconds,
    )


# ------------------------------------------------------------------------------ SFT


@checked
def encode_example(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], int]:
    """Ids of ``prompt + completion`` (special tokens as the tokenizer adds them) and how many
    belong to the prompt (lm-eval's rule: the prompt's own token count)."""
    prompt, completion = _boundary(prompt, completion)
    whole = tokenizer(prompt + completion)["input_ids"]
    n_prompt = len(tokenizer(prompt)["input_ids"])
    if n_prompt >= len(whole):
        raise TokenizationError(f"completion {completion!r} adds no token after {prompt[-40:]!r}")
    return whole, n_prompt


@checked
def completion_loss(
    model: Any, batch: Sequence[tuple[list[int], int]], pad_id: int
) -> Float[Tensor, " batch"]:
    """Each example's summed cross-entropy over its completion tokens (right padding)."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    tokens = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (batch, pos)
    attn = torch.zeros_like(tokens)
    labels = torch.full_like(tokens, -100)  # -100: not scored
    for b, (ids, n_prompt) in enumerate(batch):
        tokens[b, : len(ids)] = torch.tensor(ids)
        attn[b, : len(ids)] = 1
        labels[b, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    logits = model(input_ids=tokens.to(device), attention_mask=attn.to(device)).logits
    logp = logits[:, :-1].float().log_softmax(-1)  # (batch, pos-1, vocab): predicts pos 1..
    target = labels[:, 1:].to(device)  # (batch, pos-1)
    picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]  # (batch, pos-1)
    return -(picked * (target != -100)).sum(-1)


@checked
def sft_lora(
    base: str | os.PathLike[str],
    examples: Sequence[SFTExample],
    *,
    out: str | os.PathLike[str],
    steps: int = 100,
    lr: float = 2e-4,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    batch_size: int = 8,
    save_steps: Sequence[int] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> PhaseRun:
    """LoRA supervised fine-tuning of ``base`` on ``examples``; merged checkpoints under ``out``.

    ``base`` is a bundled name or a ``save_pretrained`` directory (its plain Hugging Face model
    is loaded: the TransformerLens bridge cannot carry a peft adapter). ``save_steps`` defaults
    to ``(0, steps // 2, steps)``. Batches are drawn without replacement, reshuffled each epoch
    by a numpy Generator seeded with ``seed``. ``stop_after=k`` stops after step ``k``; a rerun
    resumes from the last complete save step.
    """
    save = _check_run(len(examples), steps, save_steps, stop_after, "examples")
    if batch_size < 1:
        raise OutOfRangeError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out)
    settings = dict(
        phase="sft",
        base=str(base),
        steps=steps,
        lr=float(lr),
        r=r,
        alpha=alpha,
        dropout=float(dropout),
        batch_size=batch_size,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        save_steps=save,
        seed=seed,
        examples=_fingerprint(examples),
    )
    model, tokenizer = _load_base(base, device)
    encoded = [encode_example(tokenizer, e.prompt, e.completion) for e in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kinds = sorted({e.kind for e in examples})
    peft_model = _lora_model(model, settings)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    kind_loss: dict[str, list[float]] = {k: [] for k in kinds}
    order: list[int] = []
    first = 1
    resume = next((m for s in reversed(save) if (m := _complete(out, s, settings))), None)
    if resume is not None:  # continue from the last complete checkpoint
        state = torch.load(_step_dir(out, resume["step"]) / _STATE, weights_only=True)
        peft_model.load_state_dict(state["adapter"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = resume["numpy_rng"]
        order, losses, kind_loss = resume["order"], resume["loss"], resume["kind_loss"]
        first = resume["step"] + 1

    def checkpoint(step: int) -> None:
        where = _step_dir(out, step)
        (where / MARKER).unlink(missing_ok=True)
        _save_merged(peft_model, tokenizer, where)
        adapter = {k: v.detach().cpu() for k, v in peft_model.state_dict().items() if "lora_" in k}
        torch.save(
            dict(
                adapter=adapter, optimizer=optimizer.state_dict(), torch_rng=torch.get_rng_state()
            ),
            where / _STATE,
        )
        write_json(
            where / MARKER,
            dict(
                step=step,
                settings=settings,
                loss=losses,
                kind_loss=kind_loss,
                order=order,
                numpy_rng=rng.bit_generator.state,
            ),
        )

    start = time.perf_counter()
    last = steps if stop_after is None else stop_after
    if first == 1 and 0 in save:
        checkpoint(0)
    peft_model.train()
    for step in tqdm(range(first, last + 1), desc="sft", disable=not progress):
        if len(order) < batch_size:
            order += [int(i) for i in rng.permutation(len(examples))]
        batch, order = order[:batch_size], order[batch_size:]
        per_example = completion_loss(peft_model, [encoded[i] for i in batch], pad_id)
        loss = per_example.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        for k in kinds:
            mine = [j for j, i in enumerate(batch) if examples[i].kind == k]
            kind_loss[k].append(float(per_example[mine].detach().mean()) if mine else math.nan)
        if step in save:
            checkpoint(step)
    peft_model.eval()
    return _run(
        "sft",
        base,
        out,
        save,
        losses,
        kind_loss,
        settings,
        len(examples),
        time.perf_counter() - start,
    )


def _lora_model(model: Any, settings: dict[str, Any]) -> Any:
    """``model`` wrapped in a fresh LoRA adapter (its init seeded by ``settings["seed"]``)."""
    from peft import get_peft_model  # noqa: PLC0415

    config = _lora_config(
        settings["r"], settings["alpha"], settings["dropout"], settings["target_modules"]
    )
    torch.manual_seed(settings["seed"])
    peft_model = get_peft_model(model, config)
    _check_adapted(peft_model)
    return peft_model


# ------------------------------------------------------------------------------ DPO


def _trl_sequences(tokenizer: Any, pair: DPOPair) -> tuple[list[int], list[int], int]:
    """TRL 1.16's tokenization of a non-conversational pair: EOS appended to both completions,
    ``tokenizer(text)`` with its special tokens (BOS where the tokenizer adds it), the completion
    starting where the prompt and prompt+completion ids diverge."""
    eos = tokenizer.eos_token
    chosen = pair.chosen if pair.chosen.endswith(eos) else pair.chosen + eos
    rejected = pair.rejected if pair.rejected.endswith(eos) else pair.rejected + eos
    p = tokenizer(text=pair.prompt)["input_ids"]
    c = tokenizer(text=pair.prompt + chosen)["input_ids"]
    r = tokenizer(text=pair.prompt + rejected)["input_ids"]

    def common(a: list[int], b: list[int]) -> int:
        return next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )

    return c, r, min(common(p, c), common(p, r))


def _sequence_logprob(model: Any, ids: list[int], start: int) -> Tensor:
    """log p(ids[start:] | ids[:start]) under ``model``: a plain forward, one sequence."""
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids], device=device)).logits[0]  # (pos, vocab)
    logp = logits.float().log_softmax(-1)
    return torch.stack([logp[t - 1, ids[t]] for t in range(start, len(ids))]).sum()


@checked
def dpo_loss_by_hand(
    policy: Any, reference: Any, tokenizer: Any, pairs: Sequence[DPOPair], *, beta: float
) -> Tensor:
    """The DPO loss, -log sigmoid(beta * ((log pi(c|x) - log ref(c|x)) - (log pi(r|x) - log
    ref(r|x)))), averaged over ``pairs``, with log-probs summed over completion tokens (EOS
    included, tokenized as TRL does), one sequence at a time with the plain HF models."""
    if not pairs:
        raise EmptyInputError("no pairs given")
    losses = []
    with torch.no_grad():
        for pair in pairs:
            c, r, start = _trl_sequences(tokenizer, pair)
            chosen = _sequence_logprob(policy, c, start) - _sequence_logprob(reference, c, start)
            rejected = _sequence_logprob(policy, r, start) - _sequence_logprob(reference, r, start)
            losses.append(-torch.nn.functional.logsigmoid(beta * (chosen - rejected)))
    return torch.stack(losses).mean()


def _dpo_trainer(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[DPOPair],
    settings: dict[str, Any],
    out: Path,
    *,
    device: str,
    progress: bool,
    callbacks: list[Any],
) -> Any:
    """TRL's DPOTrainer, offline (no hub, no wandb), LoRA adapter over ``model`` as the policy."""
    import datasets  # noqa: PLC0415
    from datasets import Dataset  # noqa: PLC0415
    from transformers import PrinterCallback  # noqa: PLC0415
    from trl import DPOConfig, DPOTrainer  # noqa: PLC0415

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = Dataset.from_dict(
        dict(
            prompt=[p.prompt for p in pairs],
            chosen=[p.chosen for p in pairs],
            rejected=[p.rejected for p in pairs],
        )
    )
    args = DPOConfig(
        output_dir=str(out / "trainer"),
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        beta=settings["beta"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=settings["seed"],
        data_seed=settings["seed"],
        use_cpu=device == "cpu",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        max_length=None,
        push_to_hub=False,
        save_only_model=False,
    )
    config = _lora_config(
        settings["r"], settings["alpha"], settings["dropout"], settings["target_modules"]
    )
    bars = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=config,
            callbacks=callbacks,
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    if not progress:  # the printer prints every logged dict when tqdm is off
        trainer.remove_callback(PrinterCallback)
    _check_adapted(trainer.model)
    return trainer


@checked
def dpo_tune(
    base_dir: str | os.PathLike[str],
    pairs: Sequence[DPOPair],
    *,
    out: str | os.PathLike[str],
    steps: int = 50,
    beta: float = 0.1,
    lr: float = 5e-5,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    batch_size: int = 8,
    save_steps: Sequence[int] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> PhaseRun:
    """Preference tuning of the SFT checkpoint ``base_dir`` on ``pairs`` with TRL's DPOTrainer.

    The offline stand-in for the paper's RLHF stage (PPO): DPO needs no reward model and no
    sampling. The policy is a fresh LoRA adapter on ``base_dir``; the reference is ``base_dir``
    itself (the adapter disabled). Constant learning rate, no warmup, no weight decay. Merged
    checkpoints ``out/step-{k:05d}`` at ``save_steps`` (default ``(0, steps // 2, steps)``); the
    trainer's own checkpoints (adapter, optimizer, scheduler, RNG) go to ``out/trainer`` and a
    rerun resumes from the last complete one. The loss recorded is TRL's logged loss per step.
    """
    from transformers import TrainerCallback  # noqa: PLC0415

    save = _check_run(len(pairs), steps, save_steps, stop_after, "pairs")
    if batch_size < 1 or beta <= 0:
        raise OutOfRangeError(f"batch_size and beta must be positive: {batch_size}, {beta}")
    root = Path(out)
    settings = dict(
        phase="dpo",
        base=str(base_dir),
        steps=steps,
        beta=float(beta),
        lr=float(lr),
        r=r,
        alpha=alpha,
        dropout=float(dropout),
        batch_size=batch_size,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        save_steps=save,
        seed=seed,
        examples=_fingerprint(pairs),
    )
    model, tokenizer = _load_base(base_dir, device)
    resume = next((m for s in reversed(save) if (m := _complete(root, s, settings))), None)
    start = time.perf_counter()
    if resume is None and 0 in save:
        where = _step_dir(root, 0)
        model.save_pretrained(str(where))
        tokenizer.save_pretrained(str(where))
        write_json(where / MARKER, dict(step=0, settings=settings, loss=[]))
    if (resume is not None and resume["step"] == steps) or stop_after == 0:
        losses = resume["loss"] if resume else []
        return _run(
            "dpo",
            base_dir,
            root,
            save,
            losses,
            {},
            settings,
            len(pairs),
            time.perf_counter() - start,
        )

    class MergedCheckpoints(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            control.should_save = state.global_step in save
            if stop_after is not None and state.global_step >= stop_after:
                control.should_training_stop = True

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            where = _step_dir(root, state.global_step)
            (where / MARKER).unlink(missing_ok=True)
            _save_merged(kw["model"], tokenizer, where)
            logged = [e["loss"] for e in state.log_history if "loss" in e]
            write_json(where / MARKER, dict(step=state.global_step, settings=settings, loss=logged))

    trainer = _dpo_trainer(
        model,
        tokenizer,
        pairs,
        settings,
        root,
        device=device,
        progress=progress,
        callbacks=[MergedCheckpoints()],
    )
    checkpoint = None
    if resume is not None and resume["step"] > 0:
        checkpoint = root / "trainer" / f"checkpoint-{resume['step']}"
        if not checkpoint.is_dir():
            raise StoreMismatchError(f"{checkpoint} is missing: cannot resume {root}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return _run(
        "dpo", base_dir, root, save, losses, {}, settings, len(pairs), time.perf_counter() - start
    )
