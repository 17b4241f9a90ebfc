"""Train next-token prediction on the latent-concept model and watch linearity appear.

Jiang et al. (2024) argue that two ingredients make concepts linear: (1) next-token prediction
with softmax cross-entropy, whose optimum matches log-odds, so that under independence the
differences ``g(y1) - g(y0)`` of a concept's token pairs must be parallel, and (2) the implicit
bias of gradient descent, which keeps them nearly parallel, and independent concepts nearly
orthogonal, even where the loss alone would allow other solutions (dependent concepts,
``d`` far below ``m``, incomplete data). ``train_origins`` fits

    p(y | x) = softmax_y(f(x) . g(y)),   f(x), g(y) in R^d,

by SGD or Adam on samples ``(x, y)``: ``x`` a context pattern drawn with its weight, ``y`` its
next token drawn from ``q(y | core(x))`` (``mechlin.origins.latent``). ``f`` is a free
embedding per context pattern (``context_encoder="embedding"``) or an MLP of the pattern's
two-hot code (``"mlp"``: inputs ``[x == 1, x == 0]``, one ReLU hidden layer). Every
``record_every`` steps it records the exact expected loss on the training contexts (and its
minimum, the conditional entropy), the linearity ``L_i`` of every concept for ``g`` and ``f``,
their random-pair baselines and the orthogonality of independent vs dependent concepts
(``mechlin.origins.measures``). Context measures use the training contexts only (an unseen
pattern's embedding never moves).

``shuffle_tokens=True`` is the control: training targets are relabelled by a fixed random
permutation of the vocabulary, so the data no longer tie token ids to concepts, and the measure
(which reads the true concepts of the token ids) must not find linearity.

mechlin's choices, not the paper's: ``d=16``, ``steps=2000``, ``batch_size=1024``, SGD with
``lr=20`` on the mean batch loss (Adam ``lr=0.01``; a smaller batch or a larger ``lr`` leaves
more sampling noise in ``g`` and lowers linearity: 0.90 at batch 256, 0.97 at 1024 on the
default 8-concept model), a small Gaussian initialisation
(``init_scale=0.01``: each vector has norm about 0.01; the implicit bias needs it: at 0.1 the
random start survives in ``g`` and linearity stays near 0.8), ``hidden=64``, no bias terms
in the logits. Same seed, same numbers (CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin.errors import ArgumentError, OutOfRangeError
from mechlin.origins.latent import LatentConceptModel, TokenSet, build_tokens
from mechlin.origins.measures import (
    concept_gram,
    concept_pairs,
    linearity,
    random_pair_baseline,
    split_by_independence,
)
from mechlin.results import Result

Optimizer = Literal["sgd", "adam"]
Encoder = Literal["embedding", "mlp"]
Targets = Literal["sampled", "expected"]
Setting = str | int | float | bool
DEFAULT_LR = {"sgd": 20.0, "adam": 0.01}
CONVERGED_NATS = 0.02  # excess loss below which summary() calls a run converged (origins_grid's)


@dataclass(frozen=True)
class OriginsRun(Result):
    """Loss, linearity and orthogonality over training on a latent-concept model."""

    _nonfinite: ClassVar[frozenset[str]] = frozenset(
        {
            "unembed_linearity",
            "context_linearity",
            "unembed_baseline",
            "context_baseline",
            "orth_independent",
            "orth_dependent",
            "unembed_gram",
            "context_gram",
        }
    )  # NaN: no pairs to measure

    steps: Int[Tensor, " record"]
    loss: Float[Tensor, " record"]  # exact expected cross-entropy on the training contexts
    optimum: float  # its minimum: the expected conditional entropy
    unembed_linearity: Float[Tensor, "record concept"]  # L_i of g
    context_linearity: Float[Tensor, "record concept"]  # L_i of f
    unembed_baseline: Float[Tensor, " record"]  # random token pairs
    context_baseline: Float[Tensor, " record"]  # random context pairs
    orth_independent: Float[Tensor, " record"]  # mean |cos| of independent concept directions
    orth_dependent: Float[Tensor, " record"]  # mean |cos| of dependent concept directions
    unembed_gram: Float[Tensor, "concept concept"]  # final cosines of g's concept directions
    context_gram: Float[Tensor, "concept concept"]  # final cosines of f's concept directions
    independent: Bool[Tensor, "concept concept"]  # marginal independence (d-separation)
    batch_loss: Float[Tensor, " step"]  # training loss of every step
    unembeddings: Float[Tensor, "vocab d"]  # final g(y)
    tokens: Int[Tensor, "vocab concept"]  # concept vector of each token
    settings: dict[str, Setting]

    def __post_init__(self) -> None:
        r, m = self.unembed_linearity.shape
        for name in (
            "loss",
            "steps",
            "unembed_baseline",
            "context_baseline",
            "orth_independent",
            "orth_dependent",
        ):
            if getattr(self, name).shape != (r,):
                raise ArgumentError(f"{name} must have one entry per record ({r})")
        if self.context_linearity.shape != (r, m):
            raise ArgumentError(
                "context_linearity must be (record, concept) like unembed_linearity"
            )
        for name in ("unembed_gram", "context_gram", "independent"):
            if getattr(self, name).shape != (m, m):
                raise ArgumentError(f"{name} must be ({m}, {m})")
        if self.tokens.shape != (self.unembeddings.shape[0], m):
            raise ArgumentError("tokens must be (vocab, concept) with one row per unembedding")

    @property
    def n_concepts(self) -> int:
        return int(self.unembed_linearity.shape[1])

    @property
    def final(self) -> dict[str, float]:
        """Headline numbers at the last record (linearities averaged over concepts)."""
        return {
            "loss": float(self.loss[-1]),
            "excess_loss": float(self.loss[-1]) - self.optimum,
            "unembed_linearity": float(self.unembed_linearity[-1].nanmean()),
            "context_linearity": float(self.context_linearity[-1].nanmean()),
            "unembed_baseline": float(self.unembed_baseline[-1]),
            "context_baseline": float(self.context_baseline[-1]),
            "orth_independent": float(self.orth_independent[-1]),
            "orth_dependent": float(self.orth_dependent[-1]),
            "orth_random": random_abs_cosine(int(self.unembeddings.shape[1])),
        }

    def summary(self) -> str:
        s, f = self.settings, self.final
        return "\n".join(
            [
                f"latent-concept model: m={self.n_concepts} concepts, vocab {len(self.tokens)}, "
                f"d={s.get('d')}, {s.get('optimizer')}, {s.get('context_encoder')} encoder, "
                f"{int(self.steps[-1])} steps",
                f"loss {f['loss']:.4f} (optimum {self.optimum:.4f}, excess {f['excess_loss']:.4f}"
                + (
                    ")"
                    if f["excess_loss"] <= CONVERGED_NATS
                    else f"; NOT converged: more than {CONVERGED_NATS} nats above the optimum, "
                    "the numbers below are mid-training - train longer, or use origins_grid, "
                    "which descends the exact loss to a tolerance)"
                ),
                f"linearity (mean pairwise cos of pair differences): unembedding "
                f"{f['unembed_linearity']:.3f} (random pairs {f['unembed_baseline']:+.3f}), "
                f"context {f['context_linearity']:.3f} (random {f['context_baseline']:+.3f})",
                f"Euclidean |cos| between concept directions: independent "
                f"{f['orth_independent']:.3f}, dependent {f['orth_dependent']:.3f} (random "
                f"directions in R^{s.get('d')}: {f['orth_random']:.3f})",
            ]
        )

    def to_frame(self) -> Any:
        """One row per (record, concept): step, loss, both linearities, baselines."""
        import pandas as pd  # noqa: PLC0415

        rows = []
        for r, step in enumerate(self.steps.tolist()):
            for i in range(self.n_concepts):
                rows.append(
                    {
                        "step": step,
                        "concept": i,
                        "loss": float(self.loss[r]),
                        "unembed_linearity": float(self.unembed_linearity[r, i]),
                        "context_linearity": float(self.context_linearity[r, i]),
                        "unembed_baseline": float(self.unembed_baseline[r]),
                        "context_baseline": float(self.context_baseline[r]),
                        "orth_independent": float(self.orth_independent[r]),
                        "orth_dependent": float(self.orth_dependent[r]),
                    }
                )
        return pd.DataFrame(rows)

    def plot(self, fig: Any = None) -> Any:
        """Linearity vs step, linearity vs excess loss, |cos| heatmap of g's directions."""
        fig, ax = viz.figure(1, 3, fig=fig, figsize=(15, 4))
        steps = self.steps.numpy()
        lin_g = self.unembed_linearity.nanmean(1).numpy()
        lin_f = self.context_linearity.nanmean(1).numpy()
        a = ax[0, 0]
        a.plot(steps, lin_g, label="unembedding g")
        a.plot(steps, lin_f, label="context f")
        a.plot(steps, self.unembed_baseline.numpy(), ":", label="g, random pairs")
        a.plot(steps, self.context_baseline.numpy(), ":", label="f, random pairs")
        a.set(xlabel="step", ylabel="mean pairwise cosine", title="linearity", ylim=(-0.2, 1.05))
        a.legend(fontsize=7)
        a = ax[0, 1]
        excess = (self.loss - self.optimum).clamp_min(1e-6).numpy()
        a.plot(excess, lin_g, "o-", ms=3, label="unembedding g")
        a.plot(excess, lin_f, "s-", ms=3, label="context f")
        a.set(xscale="log", xlabel="loss - optimum", ylabel="linearity", title="linearity vs loss")
        a.invert_xaxis()
        a.legend(fontsize=7)
        a = ax[0, 2]
        m = self.n_concepts
        img = a.imshow(self.unembed_gram.abs().numpy(), cmap="viridis", vmin=0, vmax=1)
        for i in range(m):
            for j in range(m):
                if bool(self.independent[i, j]):
                    a.text(j, i, "i", ha="center", va="center", color="w", fontsize=7)
        a.set(
            title="|cos| of g's concept directions (i = independent)",
            xlabel="concept",
            ylabel="concept",
        )
        fig.colorbar(img, ax=a, fraction=0.046)
        fig.tight_layout()
        return fig


def random_abs_cosine(d: int) -> float:
    """``E |cos|`` of two independent uniform directions in ``R^d``: the no-structure level."""
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def _encode(contexts: Tensor) -> Tensor:
    return torch.cat([(contexts == 1), (contexts == 0)], 1).float()  # (context, 2m)


class _Model(torch.nn.Module):
    def __init__(
        self,
        n_contexts: int,
        n_tokens: int,
        m: int,
        d: int,
        encoder: Encoder,
        hidden: int,
        init_scale: float,
        gen: torch.Generator,
    ) -> None:
        super().__init__()
        s = init_scale / math.sqrt(d)
        self.encoder = encoder
        self.g = torch.nn.Parameter(torch.randn(n_tokens, d, generator=gen) * s)
        if encoder == "embedding":
            self.f = torch.nn.Parameter(torch.randn(n_contexts, d, generator=gen) * s)
        else:
            self.w1 = torch.nn.Parameter(
                torch.randn(2 * m, hidden, generator=gen) / math.sqrt(2 * m)
            )
            self.b1 = torch.nn.Parameter(torch.zeros(hidden))
            self.w2 = torch.nn.Parameter(torch.randn(hidden, d, generator=gen) * s)

    def context(self, idx: Tensor, codes: Tensor) -> Tensor:
        if self.encoder == "embedding":
            return self.f[idx]
        return torch.relu(codes[idx] @ self.w1 + self.b1) @ self.w2  # (batch, d)


@checked
def expected_loss(
    f: Float[Tensor, "context d"], g: Float[Tensor, "vocab d"], data: TokenSet
) -> float:
    """Exact expected cross-entropy ``sum_x w(x) sum_y Q(y|x) -log softmax(f(x) . g)_y``.

    ``f`` holds one row per training context (``data.train``); zero-probability targets add 0.
    """
    w = data.weight[data.train].double()
    w = w / w.sum()
    t = data.target[data.train]  # (context, vocab)
    logp = torch.log_softmax(f.double() @ g.double().T, dim=1)
    per = -(torch.where(t > 0, t * logp, torch.zeros_like(logp))).sum(1)
    return float(w @ per)


@checked
def train_origins(
    lcm: LatentConceptModel,
    *,
    d: int = 16,
    steps: int = 2000,
    lr: float | int | None = None,
    optimizer: Optimizer = "sgd",
    batch_size: int = 1024,
    context_encoder: Encoder = "embedding",
    hidden: int = 64,
    init_scale: float | int = 0.01,
    n_tokens: int | None = None,
    n_contexts: int | None = None,
    core_prob: float | int = 0.5,
    context_fraction: float | int = 1.0,
    token_fraction: float | int = 1.0,
    shuffle_tokens: bool = False,
    targets: Targets = "sampled",
    seed: int = 0,
    record_every: int = 100,
    device: str = "cpu",
    progress: bool = False,
) -> OriginsRun:
    """Fit ``softmax(f(x) . g(y))`` to next-token samples of ``lcm`` and record linearity.

    Args:
        lcm: the latent-concept model (its DAG gives the independent pairs).
        d: representation dimension (may be far below ``n_concepts``).
        steps, lr, optimizer, batch_size: gradient descent (``lr=None``: 20 for SGD, 0.01
            for Adam), on the mean cross-entropy of a batch of sampled ``(x, y)``.
        context_encoder: ``"embedding"`` (a vector per context pattern) or ``"mlp"``.
        n_tokens, n_contexts, core_prob, context_fraction, token_fraction: the data
            (``mechlin.origins.latent.build_tokens``; ``None`` = all vectors / all patterns).
        shuffle_tokens: the control run, targets relabelled by a random permutation.
        record_every: steps between measurements (the first at step 0, the last at ``steps``).
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise OutOfRangeError(f"d={d!r} is out of range: the representation needs d >= 1")
    if steps < 0 or batch_size < 1 or record_every < 1 or hidden < 1:
        raise OutOfRangeError(
            f"need steps >= 0, batch_size >= 1, record_every >= 1, hidden >= 1; got "
            f"steps={steps}, batch_size={batch_size}, record_every={record_every}, hidden={hidden}"
        )
    if optimizer not in DEFAULT_LR:
        raise ArgumentError(f"optimizer must be 'sgd' or 'adam', not {optimizer!r}")
    if context_encoder not in ("embedding", "mlp"):
        raise ArgumentError(
            f"context_encoder must be 'embedding' or 'mlp', not {context_encoder!r}"
        )
    if targets not in ("sampled", "expected"):
        raise ArgumentError(f"targets must be 'sampled' or 'expected', not {targets!r}")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    if not lr > 0:
        raise OutOfRangeError(f"lr={lr} is out of range: it must be > 0")
    data = build_tokens(
        lcm,
        n_tokens=n_tokens,
        n_contexts=n_contexts,
        core_prob=core_prob,
        context_fraction=context_fraction,
        token_fraction=token_fraction,
        seed=seed,
    )
    gen = torch.Generator().manual_seed(seed)
    m, n_vocab = data.n_concepts, len(data.tokens)
    train_idx = data.train.nonzero().flatten()  # (train,)
    codes = _encode(data.contexts)  # (context, 2m)
    model = _Model(
        len(data.contexts), n_vocab, m, d, context_encoder, hidden, float(init_scale), gen
    ).to(device)
    opt: torch.optim.Optimizer = (
        torch.optim.SGD(model.parameters(), lr=lr)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=lr)
    )
    perm = torch.randperm(n_vocab, generator=gen) if shuffle_tokens else torch.arange(n_vocab)
    w_cdf = data.weight[train_idx].cumsum(0)  # (train,)
    t_cdf = data.target[train_idx].cumsum(1)  # (train, vocab)
    ctx_codes = data.contexts[train_idx]
    tok_pairs, ctx_pairs = concept_pairs(data.tokens), concept_pairs(ctx_codes)
    independent = lcm.independent_pairs()
    n_base = 1000
    codes_dev, train_dev = codes.to(device), train_idx.to(device)
    rec: dict[str, list[Any]] = {
        k: [] for k in ("steps", "loss", "lg", "lf", "bg", "bf", "oi", "od")
    }

    def record(step: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            f = model.context(train_dev, codes_dev).cpu().double()  # (train, d)
            g = model.g.detach().cpu().double()  # (vocab, d)
        gram_g = concept_gram(g, tok_pairs)
        oi, od = split_by_independence(gram_g, independent)
        rec["steps"].append(step)
        rec["loss"].append(expected_loss(f, g, data))
        rec["lg"].append(linearity(g, tok_pairs))
        rec["lf"].append(linearity(f, ctx_pairs))
        rec["bg"].append(random_pair_baseline(g, n_base, seed=seed + step))
        rec["bf"].append(random_pair_baseline(f, n_base, seed=seed + step + 1))
        rec["oi"].append(oi)
        rec["od"].append(od)
        return f, g

    batch_loss = torch.zeros(steps, dtype=torch.float64)
    for step in tqdm(range(steps + 1), disable=not progress, desc="training"):
        if step % record_every == 0 or step == steps:
            f, g = record(step)
        if step == steps:
            break
        u = torch.rand(batch_size, 2, generator=gen, dtype=torch.float64)  # inverse-CDF draws
        pick = torch.searchsorted(w_cdf, u[:, :1] * w_cdf[-1]).flatten().clamp_max(len(w_cdf) - 1)
        ctx = train_idx[pick]  # (batch,) context index
        rows = t_cdf[pick]  # (batch, vocab)
        y = torch.searchsorted(rows, u[:, 1:] * rows[:, -1:]).flatten().clamp_max(n_vocab - 1)
        logits = model.context(ctx.to(device), codes_dev) @ model.g.T  # (batch, vocab)
        if targets == "sampled":
            y = perm[y]  # identity unless shuffle_tokens
            loss = torch.nn.functional.cross_entropy(logits, y.to(device))
        else:  # the exact next-token law of each sampled context as a soft target
            soft = torch.empty_like(data.target[ctx]).index_copy_(1, perm, data.target[ctx])
            loss = torch.nn.functional.cross_entropy(logits, soft.float().to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        batch_loss[step] = float(loss.detach())
    settings: dict[str, Setting] = {
        "n_concepts": m,
        "edge_prob": lcm.edge_prob,
        "lcm_seed": lcm.seed,
        "d": d,
        "steps": steps,
        "lr": lr,
        "optimizer": optimizer,
        "batch_size": batch_size,
        "context_encoder": context_encoder,
        "init_scale": float(init_scale),
        "n_tokens": n_vocab,
        "n_contexts": len(data.contexts),
        "n_train_contexts": len(train_idx),
        "core_prob": float(core_prob),
        "context_fraction": float(context_fraction),
        "token_fraction": float(token_fraction),
        "shuffle_tokens": shuffle_tokens,
        "seed": seed,
    }
    return OriginsRun(
        steps=torch.tensor(rec["steps"]),
        loss=torch.tensor(rec["loss"], dtype=torch.float64),
        optimum=data.entropy(),
        unembed_linearity=torch.stack(rec["lg"]),
        context_linearity=torch.stack(rec["lf"]),
        unembed_baseline=torch.tensor(rec["bg"], dtype=torch.float64),
        context_baseline=torch.tensor(rec["bf"], dtype=torch.float64),
        orth_independent=torch.tensor(rec["oi"], dtype=torch.float64),
        orth_dependent=torch.tensor(rec["od"], dtype=torch.float64),
        unembed_gram=concept_gram(g, tok_pairs),
        context_gram=concept_gram(f, ctx_pairs),
        independent=independent,
        batch_loss=batch_loss,
        unembeddings=g.float(),
        tokens=data.tokens,
        settings=settings,
    )
