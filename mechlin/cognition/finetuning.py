"""A checkpoint series made offline: short supervised fine-tuning on letter answers.

Yan et al. follow Baichuan through pretraining, SFT and RLHF checkpoints; no such series is
available offline, so ``finetune_letters`` makes one. It fine-tunes a plain Hugging Face model
(a bundled name such as ``"gemma-3-270m"``, or a ``save_pretrained`` directory) on letter-format
questions: the loss is the cross-entropy of the answer letter (``" A"``, ``" B"``, ...) at the
last prompt token, nothing else. Only the last ``train_last`` decoder layers are trained (the
rest, embeddings and unembedding included, stay frozen), with AdamW and a plain torch loop, so a
few steps fit a 2-core CPU; the same code runs on a GPU (``device=``). A checkpoint
(``save_pretrained`` of the model and its tokenizer, which ``mechlin.load_model(directory)``
loads) is written at each step of ``save_steps``, step 0 being the base model itself.

Pitfalls: train on items disjoint from every evaluated item (mechlin uses the ARC-Easy test
set for training and the dev sets for evaluation; ``finetune_letters`` refuses nothing, the
caller must check). A bridge booted by TransformerLens wraps the Hugging Face modules and
cannot be saved with ``save_pretrained``: this function always loads its own plain copy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.cognition.prompts import letter_options, letter_prompt
from mechlin.datasets.mcq import MCQDataset
from mechlin.errors import ArgumentError, EmptyInputError, OutOfRangeError, TokenizationError
from mechlin.models import BUNDLED_MODELS, load_hf_model
from mechlin.results import Result


@dataclass(frozen=True)
class FineTuneRun(Result):
    """The loss curve of a letter fine-tuning run and the checkpoints it wrote."""

    base: str
    loss: Float[Tensor, " step"]  # training loss of each optimizer step (1-based steps)
    checkpoint_steps: tuple[int, ...]
    checkpoints: tuple[str, ...]  # directories, loadable with mechlin.load_model
    train_layers: tuple[int, ...]
    n_trainable: int
    lr: float
    batch_size: int
    n_train_items: int
    seconds: float

    def __post_init__(self) -> None:
        if len(self.checkpoint_steps) != len(self.checkpoints):
            raise ArgumentError("one checkpoint directory per checkpoint step is needed")
        if self.loss.ndim != 1:
            raise ArgumentError("loss must be one value per step")

    @property
    def models(self) -> dict[str, str]:
        """``{"step N": directory}`` for ``cognition_vs_expression``."""
        return {
            f"step {s}": d for s, d in zip(self.checkpoint_steps, self.checkpoints, strict=True)
        }

    def summary(self) -> str:
        first = float(self.loss[: max(1, len(self.loss) // 5)].mean()) if len(self.loss) else 0.0
        last = float(self.loss[-max(1, len(self.loss) // 5) :].mean()) if len(self.loss) else 0.0
        return (
            f"Letter fine-tuning of {self.base}: {len(self.loss)} steps of {self.batch_size} "
            f"items (pool {self.n_train_items}), lr {self.lr:g}, layers {list(self.train_layers)} "
            f"({self.n_trainable / 1e6:.1f}M parameters), {self.seconds:.0f} s\n"
            f"  loss {first:.3f} -> {last:.3f}; checkpoints at steps {list(self.checkpoint_steps)}"
        )

    def plot(self, ax: Any = None) -> Any:

        fig, ax = viz.axes(ax, figsize=(6, 3.5))
        steps = list(range(1, len(self.loss) + 1))
        ax.plot(steps, self.loss.tolist(), ".-")
        for s in self.checkpoint_steps:
            ax.axvline(s, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("step")
        ax.set_ylabel("letter cross-entropy")
        ax.set_title(f"letter fine-tuning of {self.base}")
        return fig

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(dict(step=range(1, len(self.loss) + 1), loss=self.loss.tolist()))


def _load_plain(base: str | os.PathLike[str], device: str) -> tuple[Any, Any]:

    if str(base) in BUNDLED_MODELS:
        model, tokenizer = load_hf_model(str(base))
    else:
        path = Path(base).expanduser()
        if not path.is_dir():
            raise ArgumentError(
                f"base must be a bundled model name ({sorted(BUNDLED_MODELS)}) or a directory "
                f"written by save_pretrained, not {str(base)!r}"
            )
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, attn_implementation="eager"
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model.to(device), tokenizer  # type: ignore[arg-type]


def letter_examples(
    tokenizer: Any, dataset: MCQDataset
) -> tuple[list[list[int]], Int[Tensor, " item"]]:
    """Prompt ids (as the tokenizer encodes them, BOS included) and the answer letter's token."""
    prompts, targets = [], []
    for item in dataset:
        prompt = letter_prompt(item)
        ids = tokenizer(prompt)["input_ids"]
        letter = letter_options(item)[item.answer]
        whole = tokenizer(prompt + letter)["input_ids"]
        if whole[: len(ids)] != ids or len(whole) != len(ids) + 1:
            raise TokenizationError(
                f"letter {letter!r} is not one token after the prompt of item {item.id!r}"
            )
        prompts.append(ids)
        targets.append(whole[-1])
    return prompts, torch.tensor(targets)


def letter_loss(
    model: Model, prompts: Sequence[list[int]], targets: Int[Tensor, " batch"], pad_id: int
) -> Tensor:
    """Mean cross-entropy of the answer letter at each prompt's last token (right padding)."""
    device = next(model.parameters()).device
    lengths = torch.tensor([len(p) for p in prompts])
    tokens = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for b, p in enumerate(prompts):
        tokens[b, : len(p)] = torch.tensor(p)
        mask[b, : len(p)] = 1
    hidden = model.model(input_ids=tokens.to(device), attention_mask=mask.to(device))[0]
    last = hidden[torch.arange(len(prompts), device=device), (lengths - 1).to(device)]  # (b, d)
    logits = model.lm_head(last).float()  # (batch, vocab)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, targets.to(device))


@checked
def finetune_letters(
    base: str | os.PathLike[str],
    train: MCQDataset,
    out: str | os.PathLike[str],
    *,
    steps: int = 20,
    save_steps: Sequence[int] | None = None,
    lr: float = 1e-4,
    batch_size: int = 8,
    train_last: int = 2,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> FineTuneRun:
    """Fine-tune ``base`` on the answer letters of ``train`` and save checkpoints under ``out``.

    ``save_steps`` defaults to ``(0, steps // 2, steps)``; ``out/step_{N}`` holds checkpoint N.
    Batches are drawn without replacement (reshuffled each epoch, seeded).
    """
    if steps < 1:
        raise OutOfRangeError(f"steps must be >= 1, got {steps}")
    if len(train) == 0:
        raise EmptyInputError("the training set is empty")
    if batch_size < 1 or train_last < 1:
        raise OutOfRangeError(f"batch_size and train_last must be >= 1: {batch_size}, {train_last}")
    save = sorted(set(save_steps if save_steps is not None else (0, steps // 2, steps)))
    if save and (save[0] < 0 or save[-1] > steps):
        raise OutOfRangeError(f"save_steps must lie in 0..steps={steps}, got {save}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    model, tokenizer = _load_plain(base, device)
    layers = model.model.layers
    if not 1 <= train_last <= len(layers):
        raise OutOfRangeError(f"train_last={train_last}: the model has {len(layers)} layers")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for layer in layers[-train_last:] for p in layer.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    prompts, targets = letter_examples(tokenizer, train)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = np.random.default_rng(seed)
    out = Path(out)
    checkpoints: list[str] = []

    def checkpoint(step: int) -> None:
        where = out / f"step_{step}"
        model.save_pretrained(str(where))
        tokenizer.save_pretrained(str(where))
        checkpoints.append(str(where))

    start = time.perf_counter()
    losses: list[float] = []
    order: list[int] = []
    if 0 in save:
        checkpoint(0)
    model.train()
    for step in tqdm(range(1, steps + 1), desc="fine-tuning", disable=not progress):
        if len(order) < batch_size:
            order += [int(i) for i in rng.permutation(len(train))]
        batch, order = order[:batch_size], order[batch_size:]
        loss = letter_loss(model, [prompts[i] for i in batch], targets[batch], pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step in save:
            checkpoint(step)
    model.eval()
    n_layers = len(layers)
    return FineTuneRun(
        base=str(base),
        loss=torch.tensor(losses),
        checkpoint_steps=tuple(save),
        checkpoints=tuple(checkpoints),
        train_layers=tuple(range(n_layers - train_last, n_layers)),
        n_trainable=sum(p.numel() for p in trainable),
        lr=float(lr),
        batch_size=batch_size,
        n_train_items=len(train),
        seconds=time.perf_counter() - start,
    )
