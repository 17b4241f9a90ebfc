"""Reproduce Yan et al. (2024), cognition vs expression through a phase series: one command.

    python scripts/reproduce_yan2024.py --out docs/reproductions/data/yan2024 \\
        --work ~/.cache/mechlin/yan2024 --doc docs/reproductions/yan2024.md
    python scripts/reproduce_yan2024.py --tiny --out /tmp/yan-tiny         # CI, about a minute

Yan et al. follow Baichuan-7B/33B through pretraining, SFT and RLHF checkpoints. No such
series exists offline, so this script makes one for each bundled model and measures every
checkpoint:

1. **Pools** (``data.json``). ARC-Easy *test* is the training pool, cut (``disjoint_pool``) of
   every item whose id or normalised question text appears in an evaluated set, then split
   into three disjoint parts: SFT items, DPO items, few-shot examples.
2. **Phases** per model: ``sft_lora`` (LoRA on every layer; letter answers, cloze answers and
   fact completions mixed), then ``dpo_tune`` (TRL's DPO, the offline stand-in for the paper's
   PPO) from the last SFT checkpoint; intermediate checkpoints kept. A letter fine-tune of the
   top layers only (``finetune_letters``) is the *negative control*: the layers below stay
   bit-identical, so its cognition below them cannot change by construction.
3. **Measures** per (model, checkpoint, dataset) cell on the full evaluation sets: expression
   (``expression_scores``: acc, acc_norm, letter, greedy letter, pass@k of letters sampled from
   the whole vocabulary, zero-shot; few-shot at the phase ends) and cognition
   (``crossfit_cognition``: cross-fitted letter probes at every layer, the layer fixed in
   advance, nested-CV best layer, shuffled-label control), from the letter prompt's last token.
4. **Summary** (``summary.json``, ``cells.npz``: every per-item verdict the numbers come from),
   tables, figures and the pre-registered verdicts, rendered into the doc with ``--doc``.

Everything resumes: the training phases from their last complete checkpoint, the measures
from their stores, the cells from their finished files. ``--work`` holds the large files
(checkpoints, hidden states; default ``<out>/work``), ``--out`` the small committed ones.
Jobs run in a fixed order, most important first (``--max-jobs`` stops after that many, so a
long run can be done in pieces); the summary covers the cells finished so far and says which
are missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

import mechlin
from mechlin.cognition import ExpressionScores, expression_scores, finetune_letters, letter_prompt
from mechlin.cognition.expression import pass_at_k
from mechlin.cognition.phases import PhaseRun, dpo_pairs, dpo_tune, sft_examples, sft_lora
from mechlin.cognition.stats import (
    CrossFit,
    assert_disjoint,
    bootstrap_ci,
    crossfit_cognition,
    curves_vs_step,
    disjoint_pool,
    paired_delta,
    pca_grid,
    stratified_permutation_corr,
    umap_view,
)
from mechlin.datasets.mcq import MCQDataset, load_mcq
from mechlin.neurons import collect_activations
from mechlin.sites import hook_names
from mechlin.tiny import tiny_hf_model, tiny_tokenizer


@dataclass(frozen=True)
class Spec:
    label: str  # short name in tables
    base: str  # bundled name or directory
    start: str  # what the starting checkpoint is


FULL: dict[str, Any] = {
    "models": (
        Spec("gemma", "gemma-3-270m", "pretrained only (Gemma-3-270M base)"),
        Spec("smollm2", "smollm2-135m", "instruct start (SmolLM2-135M-Instruct: SFT + DPO)"),
    ),
    "evals": ("arc_easy", "arc_challenge", "openbookqa", "commonsenseqa"),
    "n_eval": None,  # every item of each set
    "short": False,
    "split": dict(sft=1200, dpo=600, shots=200),
    "sft": dict(steps=160, save_steps=(40, 80, 160), batch_size=8, lr=2e-4, r=8, alpha=16),
    "dpo": dict(steps=80, save_steps=(40, 80), batch_size=8, lr=5e-5, beta=0.1, r=8, alpha=16),
    "control": dict(steps=60, train_last=4, lr=1e-4, batch_size=8),
    "expression": dict(n_samples=16, temperature=1.0, sample_from="vocab", batch_size=16),
    "shots": 3,
    "pass_k": (1, 4, 16),
    "probe": dict(folds=5, pca_dim=64, C=1.0, n_boot=1000),
    "layer_fraction": 2 / 3,  # the layer fixed in advance: round(fraction * (n_layers - 1))
    "view_layers": 4,  # layers shown in the PCA grid
    "n_boot": 1000,
    "n_perm": 10_000,
}
TINY: dict[str, Any] = {
    **FULL,
    "models": (Spec("tiny", "", "random tiny Llama (CI)"),),
    "evals": ("arc_easy", "commonsenseqa"),
    "n_eval": 16,
    "short": True,
    "split": dict(sft=24, dpo=12, shots=12),
    "sft": dict(steps=3, save_steps=(2, 3), batch_size=4, lr=1e-3, r=4, alpha=8),
    "dpo": dict(steps=2, save_steps=(1, 2), batch_size=4, lr=1e-3, beta=0.1, r=4, alpha=8),
    # finetune_letters needs one-token letters, which the tiny tokenizer lacks (" C" is two)
    "control": None,
    "expression": dict(n_samples=8, temperature=1.0, sample_from="vocab", batch_size=8),
    "shots": 1,
    "pass_k": (1, 4),
    "probe": dict(folds=3, pca_dim=8, C=1.0, n_boot=200),
    "n_boot": 200,
    "n_perm": 500,
}


def _short(ds: MCQDataset) -> MCQDataset:
    """Items short enough for a one-shot prompt in the tiny model's 256-token context."""
    keep = [i for i, it in enumerate(ds) if len(it.question) + sum(map(len, it.choices)) < 90]
    return ds.subset(keep, name=ds.name)


def load_sets(cfg: dict[str, Any]) -> dict[str, MCQDataset]:
    sets = {}
    for name in cfg["evals"]:
        ds = load_mcq(name)
        if cfg["short"]:
            ds = _short(ds)
        if cfg["n_eval"] is not None and len(ds) > cfg["n_eval"]:
            ds = ds.subset(list(range(cfg["n_eval"])), name=name)
        sets[name] = ds
    return sets


def pools(cfg: dict[str, Any], evals: dict[str, MCQDataset], out: Path) -> dict[str, MCQDataset]:
    """The SFT, DPO and few-shot pools: disjoint from every evaluated set and from each other."""
    pool = load_mcq("arc_easy_test")
    if cfg["short"]:
        pool = _short(pool)
    clean, report = disjoint_pool(pool, *evals.values())
    order = np.random.default_rng(0).permutation(len(clean)).tolist()
    parts, start = {}, 0
    for name, n in cfg["split"].items():
        if start + n > len(order):
            raise SystemExit(f"the pool has {len(order)} clean items, fewer than the split needs")
        parts[name] = clean.subset(sorted(order[start : start + n]), name=f"pool-{name}")
        start += n
    for part in parts.values():
        assert_disjoint(part, *evals.values())
    ids = {name: list(p.ids) for name, p in parts.items()}
    assert not set(ids["sft"]) & set(ids["dpo"]) and not set(ids["shots"]) & set(ids["sft"])
    record = {
        "pool": "arc_easy_test",
        "pool_items": len(pool),
        "dropped": len(pool) - len(clean),
        "dropped_by_set": {
            name: {"by_id": a, "by_text": b}
            for name, a, b in zip(report.evals, report.n_by_id, report.n_by_text, strict=True)
        },
        "dropped_ids": list(report.dropped_ids),
        "parts": {name: len(v) for name, v in ids.items()},
        "ids": ids,
        "evals": {name: len(ds) for name, ds in evals.items()},
    }
    (out / "data.json").write_text(json.dumps(record, indent=1) + "\n")
    return parts


# --- the phase series ---------------------------------------------------------------------


def _tiny_base(work: Path) -> str:
    where = work / "tiny-base"
    if not (where / "config.json").is_file():
        tiny_hf_model(seed=0).save_pretrained(where)
        tiny_tokenizer().save_pretrained(where)
    return str(where)


def train(
    cfg: dict[str, Any], spec: Spec, base: str, parts: dict[str, MCQDataset], work: Path
) -> dict[str, PhaseRun]:
    """SFT, then DPO from its last checkpoint, and the negative control; each resumes."""
    where = work / spec.label
    runs: dict[str, PhaseRun] = {}
    examples = sft_examples(parts["sft"], seed=0)
    runs["sft"] = sft_lora(base, examples, out=where / "sft", seed=0, **cfg["sft"])
    pairs = dpo_pairs(parts["dpo"], seed=0)
    runs["dpo"] = dpo_tune(
        runs["sft"].checkpoints[-1], pairs, out=where / "dpo", seed=0, **cfg["dpo"]
    )
    control = where / "control" / "run.pt"
    if cfg["control"] is None:
        pass
    elif control.is_file():
        runs["control"] = PhaseRun.load(control)
    else:
        c = cfg["control"]
        run = finetune_letters(
            base,
            parts["sft"],
            where / "control",
            steps=c["steps"],
            save_steps=(c["steps"],),
            lr=c["lr"],
            batch_size=c["batch_size"],
            train_last=c["train_last"],
            seed=0,
        )
        runs["control"] = PhaseRun.from_finetune(run)
        runs["control"].save(control)
    return runs


def checkpoints(cfg: dict[str, Any], base: str, runs: dict[str, PhaseRun]) -> list[dict]:
    """Every checkpoint to measure, in order of importance (phase ends first)."""
    sft_steps = cfg["sft"]["steps"]
    out = [dict(name="base", phase="base", step=0, dir=base, end=True)]
    for phase, offset in (("sft", 0), ("dpo", sft_steps), ("control", 0)):
        if phase not in runs:
            continue
        run = runs[phase]
        for step, d in zip(run.checkpoint_steps, run.checkpoints, strict=True):
            if step == 0:
                continue
            end = step == max(run.checkpoint_steps)
            out.append(
                dict(name=f"{phase}@{step}", phase=phase, step=offset + step, dir=d, end=end)
            )
    return sorted(out, key=lambda c: (not c["end"], c["phase"] == "control"))


# --- measuring one checkpoint -------------------------------------------------------------


def fixed_layer(cfg: dict[str, Any], n_layers: int) -> int:
    return round(cfg["layer_fraction"] * (n_layers - 1))


def measure(
    cfg: dict[str, Any], model: Any, ds: MCQDataset, shots_pool: MCQDataset, cell: Path, end: bool
) -> None:
    """Expression and cognition of one (model, checkpoint, dataset) cell, into ``cell``."""
    cell.mkdir(parents=True, exist_ok=True)
    if (cell / "done.json").is_file():
        return
    e = cfg["expression"]
    zero = expression_scores(model, ds, out=cell / "expr0", seed=0, progress=True, **e)
    zero.save(cell / "expression0.pt")
    if end:
        few = expression_scores(
            model,
            ds,
            shots=cfg["shots"],
            shot_pool=shots_pool,
            out=cell / "exprk",
            seed=0,
            batch_size=e["batch_size"],
            progress=True,
        )
        few.save(cell / "expressionk.pt")
    hooks = hook_names(model, "resid_post")
    acts = collect_activations(
        model,
        [letter_prompt(it) for it in ds],
        hooks=hooks,
        pooling="last",
        batch_size=e["batch_size"],
        max_tokens=None,
        out=cell / "acts",
        progress=True,
        desc=f"hidden states {ds.name}",
    )
    X = torch.stack([acts[h].float() for h in hooks])  # (layer, item, d_model)
    layer = fixed_layer(cfg, len(hooks))
    answers = torch.tensor([it.answer for it in ds])
    n_choices = torch.tensor([len(it.choices) for it in ds])
    fit = crossfit_cognition(X, answers, n_choices, layer=layer, seed=0, **cfg["probe"])
    fit.save(cell / "cognition.pt")
    if end:  # the states the views need: a few layers, the fixed one among them
        shown = sorted({*np.linspace(0, len(hooks) - 1, cfg["view_layers"]).round().astype(int)})
        shown = sorted({*(int(x) for x in shown), layer})
        torch.save({"layers": shown, "states": X[shown].clone()}, cell / "views.pt")
    (cell / "done.json").write_text(json.dumps({"layer": layer, "items": len(ds)}) + "\n")


# --- the summary --------------------------------------------------------------------------

METRICS = ("acc", "acc_norm", "letter", "generated")


def _ci(x: torch.Tensor, cfg: dict[str, Any], seed: int = 0) -> list[float]:
    x = x.double()
    lo, hi = bootstrap_ci(x, n_boot=cfg["n_boot"], seed=seed)
    return [float(x.mean()), float(lo), float(hi)]


def _per_item_pass(s: ExpressionScores, k: int) -> torch.Tensor:
    return torch.tensor([pass_at_k(s.n_samples, int(c), k) for c in s.n_correct.tolist()])


def summarise(cfg: dict[str, Any], work: Path, plan: list[dict]) -> tuple[dict, dict]:
    """Every finished cell's numbers (summary) and per-item verdicts (arrays for cells.npz)."""
    cells, arrays, missing = [], {}, []
    for job in plan:
        cell = work / job["model"] / "cells" / job["name"] / job["dataset"]
        if not (cell / "done.json").is_file():
            missing.append(f"{job['model']} {job['name']} {job['dataset']}")
            continue
        fit = CrossFit.load(cell / "cognition.pt")
        zero = ExpressionScores.load(cell / "expression0.pt")
        key = f"{job['model']}|{job['name']}|{job['dataset']}"
        at = fit.layers.index(fit.layer)
        row: dict[str, Any] = dict(
            model=job["model"],
            checkpoint=job["name"],
            phase=job["phase"],
            step=job["step"],
            end=job["end"],
            dataset=job["dataset"],
            items=zero.n_items,
            chance=zero.chance,
            layer=fit.layer,
            n_layers=len(fit.layers),
            cognition=_ci(fit.correct[at], cfg),
            cognition_nested=_ci(fit.nested_correct, cfg)
            if fit.nested_correct is not None
            else None,
            chosen_layers=list(fit.chosen_layers),
            shuffled=_ci(fit.shuffled_correct[at], cfg),
            cognition_by_layer=[float(a) for a in fit.acc],
            shuffled_by_layer=[float(a) for a in fit.shuffled_acc],
        )
        for m in METRICS:
            v = zero.correct(m) if m != "generated" else zero.generated_correct
            row[m] = _ci(v, cfg)
            arrays[f"{key}|{m}"] = v.numpy().astype(bool)
        for k in cfg["pass_k"]:
            row[f"pass@{k}"] = _ci(_per_item_pass(zero, k), cfg)
            row[f"chance_pass@{k}"] = zero.chance_pass_at(k)
        arrays[f"{key}|n_correct"] = zero.n_correct.numpy().astype(np.int16)
        arrays[f"{key}|cognition"] = fit.correct.numpy()
        arrays[f"{key}|shuffled"] = fit.shuffled_correct.numpy()
        if fit.nested_correct is not None:
            arrays[f"{key}|nested"] = fit.nested_correct.numpy()
        if (cell / "expressionk.pt").is_file():
            few = ExpressionScores.load(cell / "expressionk.pt")
            row["shots"] = few.shots
            for m in ("acc", "acc_norm", "letter"):
                row[f"{m}_fewshot"] = _ci(few.correct(m), cfg)
                arrays[f"{key}|{m}_fewshot"] = few.correct(m).numpy()
        cells.append(row)
    rank = {"base": 0, "sft": 1, "dpo": 2, "control": 3}
    cells.sort(key=lambda c: (c["model"], rank[c["phase"]], c["step"], c["dataset"]))
    summary: dict[str, Any] = {"cells": cells, "missing": missing}
    summary["deltas"] = _deltas(cfg, cells, arrays)
    summary["correlation"] = _correlation(cfg, cells)
    summary["verdicts"] = verdicts(summary, cfg["pass_k"])
    return summary, arrays


def _deltas(cfg: dict[str, Any], cells: list[dict], arrays: dict) -> list[dict]:
    """Paired phase differences on the same items: cognition (fixed layer) and expression."""
    by = {(c["model"], c["checkpoint"], c["dataset"]): c for c in cells}
    ends: dict[str, dict[str, str]] = {}  # model -> phase -> its last checkpoint, if measured
    for c in cells:
        if c["end"]:
            ends.setdefault(c["model"], {})[c["phase"]] = c["checkpoint"]
    out = []
    for model, e in ends.items():
        for a, b in (("base", "sft"), ("sft", "dpo"), ("base", "dpo"), ("base", "control")):
            if a not in e or b not in e:
                continue
            for ds in cfg["evals"]:
                ca, cb = by.get((model, e[a], ds)), by.get((model, e[b], ds))
                if ca is None or cb is None:
                    continue
                row = dict(model=model, from_=e[a], to=e[b], dataset=ds)
                at = ca["layer"]
                for what, ka, kb in (
                    ("cognition", "cognition", "cognition"),
                    ("letter", "letter", "letter"),
                    ("acc", "acc", "acc"),
                ):
                    xa = arrays[f"{model}|{e[a]}|{ds}|{ka}"]
                    xb = arrays[f"{model}|{e[b]}|{ds}|{kb}"]
                    if what == "cognition":
                        xa, xb = xa[at], xb[at]
                    d = paired_delta(
                        torch.from_numpy(np.asarray(xb)).double(),
                        torch.from_numpy(np.asarray(xa)).double(),
                        n_boot=cfg["n_boot"],
                        n_perm=cfg["n_perm"],
                        seed=0,
                    )
                    row[what] = [d.delta, d.lo, d.hi, d.p_value]
                out.append(row)
    return out


def _correlation(cfg: dict[str, Any], cells: list[dict]) -> dict[str, Any] | None:
    """Cognition vs expression over (model, phase, dataset) cells, permuted within datasets."""
    use = [c for c in cells if c["phase"] != "control"]
    if len(use) < 4 or len({c["dataset"] for c in use}) == len(use):
        return None
    cog = torch.tensor([c["cognition"][0] for c in use], dtype=torch.float64)
    out: dict[str, Any] = {"cells": len(use)}
    for m in ("letter", "acc"):
        expr = torch.tensor([c[m][0] for c in use], dtype=torch.float64)
        r = stratified_permutation_corr(
            cog,
            expr,
            [c["dataset"] for c in use],
            n_perm=cfg["n_perm"],
            n_boot=cfg["n_boot"],
            seed=0,
        )
        out[m] = dict(
            r=r.r,
            lo=r.lo,
            hi=r.hi,
            p=r.p_value,
            p_unstratified=r.p_unstratified,
            r_within=r.r_within,
        )
    return out


# --- the pre-registered verdicts (docs/reproductions/yan2024.md states them before the run) --

STABLE = 0.05  # cognition "set before fine-tuning": the paired interval inside +-0.05


def verdicts(summary: dict[str, Any], pass_k: tuple[int, ...]) -> list[dict[str, str]]:
    """Apply the doc's pre-registered rules to the summary (gemma, the pretrained-only start)."""
    out = []
    deltas = [d for d in summary["deltas"] if d["model"] != "smollm2"]

    def rule(claim: str, rows: list[dict], ok: Any, bad: Any, what: str) -> None:
        if not rows:
            out.append(dict(claim=claim, verdict="not run", why="the cells are not measured yet"))
            return
        n_ok, n_bad = sum(map(ok, rows)), sum(map(bad, rows))
        half = len(rows) / 2
        verdict = "reproduced" if n_ok > half else "refuted" if n_bad > half else "inconclusive"
        out.append(
            dict(
                claim=claim,
                verdict=verdict,
                why=f"{n_ok} of {len(rows)} datasets {what}; {n_bad} the opposite",
            )
        )

    full = [d for d in deltas if d["from_"] == "base" and d["to"].startswith("dpo")]
    rule(
        "1. cognition is set in pretraining (base -> DPO, fixed layer)",
        full,
        lambda d: -STABLE <= d["cognition"][1] and d["cognition"][2] <= STABLE,
        lambda d: d["cognition"][1] > STABLE or d["cognition"][2] < -STABLE,
        f"have the change's interval inside +-{STABLE}",
    )
    sft = [d for d in deltas if d["from_"] == "base" and d["to"].startswith("sft")]
    rule(
        "2. expression grows in SFT (letter accuracy, base -> SFT)",
        sft,
        lambda d: d["letter"][1] > 0,
        lambda d: d["letter"][2] < 0,
        "have the rise's interval above 0",
    )
    dpo = [d for d in deltas if d["from_"].startswith("sft") and d["to"].startswith("dpo")]
    rule(
        "3. expression grows in preference tuning (letter, SFT -> DPO)",
        dpo,
        lambda d: d["letter"][1] > 0,
        lambda d: d["letter"][2] < 0,
        "have the rise's interval above 0",
    )
    corr = summary["correlation"]
    if corr is None:
        out.append(
            dict(
                claim="4. cognition and expression are correlated",
                verdict="not run",
                why="too few cells",
            )
        )
    else:
        c = corr["letter"]
        v = (
            "reproduced"
            if c["r"] > 0 and c["p"] < 0.05
            else "refuted"
            if c["hi"] < 0
            else "inconclusive"
        )
        out.append(
            dict(
                claim="4. cognition and expression are correlated (letter)",
                verdict=v,
                why=f"r = {c['r']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}], p = {c['p']:.3g} "
                f"within datasets, over {corr['cells']} cells",
            )
        )
    cells = [c for c in summary["cells"] if c["phase"] != "control"]
    if cells:
        below = sum(c["letter"][0] <= c["cognition"][2] for c in cells)
        v = (
            "reproduced"
            if below >= 0.9 * len(cells)
            else "partly"
            if below > 0.5 * len(cells)
            else "refuted"
        )
        out.append(
            dict(
                claim="5. cognition bounds expression",
                verdict=v,
                why=f"letter accuracy <= cognition's upper bound in {below} of {len(cells)} cells",
            )
        )
    ends = [c for c in cells if "letter_fewshot" in c]
    if ends:
        narrower = sum(c["letter_fewshot"][0] > c["letter"][0] for c in ends)
        k = max(pass_k)
        beyond = sum(
            c[f"pass@{k}"][0] - c[f"chance_pass@{k}"] > c["letter"][0] - c["chance"] for c in ends
        )
        v = (
            "reproduced"
            if narrower > len(ends) / 2 and beyond > len(ends) / 2
            else "partly"
            if narrower or beyond
            else "refuted"
        )
        out.append(
            dict(
                claim="6. few-shot and pass@k narrow the gap",
                verdict=v,
                why=f"few-shot letter accuracy above zero-shot in {narrower} of "
                f"{len(ends)} phase-end cells; pass@k above its chance by more than "
                f"letter accuracy is above chance in {beyond}",
            )
        )
    return out


# --- tables, figures, doc -----------------------------------------------------------------

BEGIN, END = "<!-- tables:begin (scripts/reproduce_yan2024.py --doc) -->", "<!-- tables:end -->"


def _f(v: list[float] | None) -> str:
    return "-" if v is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def render_tables(summary: dict[str, Any]) -> str:
    lines = ["### Verdicts", "", "| claim | verdict | why |", "|---|---|---|"]
    lines += [f"| {v['claim']} | **{v['verdict']}** | {v['why']} |" for v in summary["verdicts"]]
    lines += [
        "",
        "### Every cell (zero-shot; 95% bootstrap intervals over items)",
        "",
        "| model | checkpoint | dataset | items | chance | cognition (layer) | nested best "
        "layer | shuffled | letter | acc | acc_norm | generated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        lines.append(
            f"| {c['model']} | {c['checkpoint']} | {c['dataset']} | {c['items']} | "
            f"{c['chance']:.3f} | {_f(c['cognition'])} ({c['layer']}) | "
            f"{_f(c['cognition_nested'])} | {_f(c['shuffled'])} | {_f(c['letter'])} | "
            f"{_f(c['acc'])} | {_f(c['acc_norm'])} | {_f(c['generated'])} |"
        )
    lines += [
        "",
        "### Phase differences (paired bootstrap on the same items; p: sign-flip)",
        "",
        "| model | from | to | dataset | cognition | letter | acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in summary["deltas"]:
        cols = [
            f"{d[w][0]:+.3f} [{d[w][1]:+.3f}, {d[w][2]:+.3f}] p={d[w][3]:.2g}"
            for w in ("cognition", "letter", "acc")
        ]
        lines.append(
            f"| {d['model']} | {d['from_']} | {d['to']} | {d['dataset']} | "
            + " | ".join(cols)
            + " |"
        )
    corr = summary["correlation"]
    if corr:
        lines += [
            "",
            f"### Correlation over {corr['cells']} (model, checkpoint, dataset) cells",
            "",
            "| expression | r | 95% interval | p (within datasets) | p (all cells) | "
            "within-dataset r |",
            "|---|---|---|---|---|---|",
        ]
        for m in ("letter", "acc"):
            c = corr[m]
            lines.append(
                f"| {m} | {c['r']:+.3f} | [{c['lo']:+.3f}, {c['hi']:+.3f}] | "
                f"{c['p']:.3g} | {c['p_unstratified']:.3g} | {c['r_within']:+.3f} |"
            )
    ends = [c for c in summary["cells"] if "letter_fewshot" in c]
    if ends:
        ks = sorted(int(k.split("@")[1]) for k in ends[0] if k.startswith("pass@"))
        lines += [
            "",
            "### The gap with few-shot prompts and repeated sampling (phase ends)",
            "",
            "| model | checkpoint | dataset | cognition | letter 0-shot | letter "
            f"{ends[0]['shots']}-shot | " + " | ".join(f"pass@{k} (chance)" for k in ks) + " |",
            "|---|---|---|---|---|---|" + "---|" * len(ks),
        ]
        for c in ends:
            passes = " | ".join(
                f"{c[f'pass@{k}'][0]:.3f} ({c[f'chance_pass@{k}']:.2f})" for k in ks
            )
            lines.append(
                f"| {c['model']} | {c['checkpoint']} | {c['dataset']} | "
                f"{c['cognition'][0]:.3f} | {c['letter'][0]:.3f} | "
                f"{c['letter_fewshot'][0]:.3f} | {passes} |"
            )
    if summary["missing"]:
        lines += [
            "",
            f"Not measured yet ({len(summary['missing'])} cells): "
            + "; ".join(summary["missing"])
            + ".",
        ]
    return "\n".join(lines)


def write_doc(doc: Path, summary: dict[str, Any]) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no table markers: add {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{render_tables(summary)}\n{END}{tail}")


def figures(
    cfg: dict[str, Any],
    summary: dict[str, Any],
    evals: dict[str, MCQDataset],
    work: Path,
    out: Path,
) -> None:
    for model in sorted({c["model"] for c in summary["cells"]}):
        cells = [c for c in summary["cells"] if c["model"] == model and c["phase"] != "control"]
        sets = [d for d in cfg["evals"] if any(c["dataset"] == d for c in cells)]
        fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.2), squeeze=False)
        for ax, ds in zip(axes[0], sets, strict=True):
            cs = sorted((c for c in cells if c["dataset"] == ds), key=lambda c: c["step"])
            band = lambda key, cs=cs: [[c[key][i] for c in cs] for i in range(3)]  # noqa: E731
            curves_vs_step(
                [c["step"] for c in cs],
                band("cognition"),
                {"letter": band("letter"), "acc": band("acc")},
                chance=cs[0]["chance"],
                ax=ax,
                title=f"{model}: {ds}",
            )
        fig.tight_layout()
        fig.savefig(out / f"steps-{model}.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(4.2, 4))
        for ds in sets:
            cs = [c for c in cells if c["dataset"] == ds]
            ax.scatter([c["cognition"][0] for c in cs], [c["letter"][0] for c in cs], label=ds)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.set_xlabel("cognition (probe, fixed layer)")
        ax.set_ylabel("expression (letter accuracy)")
        ax.set_title(model)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"scatter-{model}.png", dpi=110)
        plt.close(fig)
        # the per-layer PCA grid and a UMAP at the fixed layer, from the phase ends
        states, labels = {}, {}
        ends = [
            c
            for c in summary["cells"]
            if c["model"] == model and "letter_fewshot" in c and c["phase"] != "control"
        ]
        for c in ends:
            views = work / model / "cells" / c["checkpoint"] / c["dataset"] / "views.pt"
            if views.is_file():
                v = torch.load(views, weights_only=True)
                states[(c["dataset"], c["checkpoint"])] = v["states"]
                labels[c["dataset"]] = torch.tensor([it.answer for it in evals[c["dataset"]]])
        if states:
            n_layers = next(iter(states.values())).shape[0]
            fig = pca_grid(states, labels, layers=list(range(n_layers)))
            fig.savefig(out / f"pca-{model}.png", dpi=90)
            plt.close(fig)
            first = sorted(states)[0][0]
            chosen = [k for k in sorted(states) if k[0] == first]
            fig, axes = plt.subplots(
                1, len(chosen), figsize=(3.6 * len(chosen), 3.4), squeeze=False
            )
            layers = torch.load(
                work / model / "cells" / chosen[0][1] / first / "views.pt", weights_only=True
            )["layers"]
            at = layers.index(ends[0]["layer"])
            for ax, key in zip(axes[0], chosen, strict=True):
                umap_view(
                    states[key][at],
                    labels[first],
                    seed=0,
                    ax=ax,
                    title=f"{key[1]}, layer {ends[0]['layer']}",
                )
            fig.suptitle(f"{model}: {first} (UMAP, for looking only)")
            fig.tight_layout()
            fig.savefig(out / f"umap-{model}.png", dpi=90)
            plt.close(fig)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the small committed files")
    ap.add_argument("--work", type=Path, help="checkpoints and hidden states (default out/work)")
    ap.add_argument("--tiny", action="store_true", help="CI size: the tiny model, a few items")
    ap.add_argument("--doc", type=Path, help="rewrite this doc's tables from the summary")
    ap.add_argument("--models", nargs="*", help="only these model labels")
    ap.add_argument("--max-jobs", type=int, default=None, help="stop after this many cells")
    ap.add_argument("--summary-only", action="store_true", help="measure nothing new")
    args = ap.parse_args(argv)
    cfg = TINY if args.tiny else FULL
    out, work = args.out, args.work or args.out / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    t0 = time.time()
    evals = load_sets(cfg)
    parts = pools(cfg, evals, out)
    specs = [s for s in cfg["models"] if not args.models or s.label in args.models]
    plan: list[dict] = []
    done = 0
    for spec in specs:
        base = _tiny_base(work) if args.tiny else spec.base
        if args.summary_only:
            runs = {
                p: PhaseRun.load(work / spec.label / p / "run.pt")
                for p in ("sft", "dpo", "control")
                if (work / spec.label / p / "run.pt").is_file()
            }
        else:
            runs = train(cfg, spec, base, parts, work)
            for phase, run in runs.items():
                run.save(work / spec.label / phase / "run.pt")
                (out / f"{spec.label}-{phase}-loss.json").write_text(
                    json.dumps([float(x) for x in run.loss]) + "\n"
                )
        if "dpo" not in runs:
            continue
        for ckpt in checkpoints(cfg, base, runs):
            for name in evals:
                plan.append(dict(ckpt, model=spec.label, dataset=name))
    for job in plan:
        if args.summary_only or (args.max_jobs is not None and done >= args.max_jobs):
            break
        cell = work / job["model"] / "cells" / job["name"] / job["dataset"]
        if (cell / "done.json").is_file():
            continue
        print(
            f"[{time.time() - t0:7.0f} s] {job['model']} {job['name']} {job['dataset']}", flush=True
        )
        model = mechlin.load_model(job["dir"])
        measure(cfg, model, evals[job["dataset"]], parts["shots"], cell, job["end"])
        del model
        done += 1
    summary, arrays = summarise(cfg, work, plan)
    summary.update(
        tiny=args.tiny,
        seconds=time.time() - t0,
        torch=torch.__version__,
        models=[dict(label=s.label, base=s.base, start=s.start) for s in specs],
        config={k: v for k, v in cfg.items() if k != "models"},
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    np.savez_compressed(out / "cells.npz", **arrays)
    (out / "tables.md").write_text(render_tables(summary) + "\n")
    figures(cfg, summary, evals, work, out)
    if args.doc:
        write_doc(args.doc, summary)
    print(render_tables(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
