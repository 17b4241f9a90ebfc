"""Expression scoring against lm-evaluation-harness 0.4.13 on the same local task, in one run.

Both score ARC-Easy dev items the lm-eval way (cloze options after ``"Question: ...\\nAnswer:"``,
``acc`` and ``acc_norm``) with the same float32 model on the same machine:

- **lm-eval**: ``lm_eval.simple_evaluate`` with its ``HFLM`` wrapper around the plain Hugging Face
  model, on a local copy of the ``arc_easy`` task (same prompt, choices and metrics as lm-eval's
  own YAML; the data read from a local JSONL, so nothing is downloaded), ``log_samples=True`` for
  the per-item answers.
- **mechlin**: ``mechlin.expression_scores`` on the bridge (prefix-tree engine: each distinct
  prefix runs once, only read rows are unembedded), timed twice: ``letters=False`` does
  lm-eval's work (the cloze options only; the speed-up quoted), and the default also scores
  each item's letter prompt (the letter metrics, which lm-eval's task does not compute).

The script checks that acc and acc_norm are the same *to the item* (every item's chosen option
by both), and prints each side's time, items per second and the ratio; ``--json`` writes them.
Timings alternate sides ``--repeat`` times and keep each side's best (the machine may be shared).
lm-eval is an optional dev extra (``pip install -e ".[bench]"``); the script says so if it is
missing.

    python benchmarks/expression_vs_lm_eval.py --model smollm2-135m --n-items 100
    python benchmarks/expression_vs_lm_eval.py --model gemma-3-270m --n-items 60
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import mechlin
from mechlin.datasets.mcq import load_mcq

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--n-items", type=int, default=100)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--repeat", type=int, default=2)
parser.add_argument("--threads", type=int, default=None)
parser.add_argument("--json", default=None, help="write the results here")
args = parser.parse_args()

try:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
except ImportError:
    sys.exit('lm-eval is not installed: pip install -e ".[bench]" (lm-eval 0.4.13)')

if args.threads:
    torch.set_num_threads(args.threads)
torch.set_grad_enabled(False)
ds = load_mcq("arc_easy", n=args.n_items, seed=0)

# the local task: lm-eval's arc_easy.yaml with the data read from a local JSONL
work = Path(tempfile.mkdtemp(prefix="lm-eval-task-"))
with open(work / "arc_easy_local.jsonl", "w") as f:
    for it in ds:
        labels = list(it.original_labels)
        f.write(
            json.dumps(
                {
                    "id": it.id,
                    "question": it.question,
                    "choices": {"text": list(it.choices), "label": labels},
                    "answerKey": labels[it.answer],
                }
            )
            + "\n"
        )
(work / "arc_easy_local.yaml").write_text(
    f"""task: arc_easy_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {work / "arc_easy_local.jsonl"}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
)
tasks = TaskManager(include_path=str(work))

model = mechlin.load_model(args.model)
hf, tok = mechlin.load_hf_model(args.model)
# BOS as the model's own tokenizer adds it (mechlin's rule); lm-eval's default differs by model
adds_bos = tok("a")["input_ids"][0] == tok.bos_token_id if tok.bos_token_id is not None else False
lm = HFLM(pretrained=hf, tokenizer=tok, batch_size=args.batch_size, add_bos_token=adds_bos)


def run_lm_eval() -> tuple[float, list[int], list[int], dict]:
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["arc_easy_local"],
        task_manager=tasks,
        log_samples=True,
        bootstrap_iters=0,
        verbosity="ERROR",
    )
    seconds = time.perf_counter() - t0
    samples = sorted(out["samples"]["arc_easy_local"], key=lambda s: s["doc_id"])
    ll = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    chars = [[len(c) for c in s["doc"]["choices"]["text"]] for s in samples]
    pick = [max(range(len(x)), key=x.__getitem__) for x in ll]
    pick_norm = [
        max(range(len(x)), key=lambda o, x=x, n=n: x[o] / n[o])
        for x, n in zip(ll, chars, strict=True)
    ]
    return seconds, pick, pick_norm, out["results"]["arc_easy_local"]


def run_mechlin(letters: bool) -> tuple[float, list[int], list[int], mechlin.ExpressionScores]:
    t0 = time.perf_counter()
    s = mechlin.expression_scores(
        model, ds, batch_size=args.batch_size, letters=letters, progress=False
    )
    seconds = time.perf_counter() - t0
    pick = s.option_loglik.argmax(-1).tolist()
    pick_norm = (s.option_loglik / s.option_chars.clamp(min=1)).argmax(-1).tolist()
    return seconds, pick, pick_norm, s


mechlin.expression_scores(model, ds.subset([0]), progress=False)  # warm-up
times: dict[str, list[float]] = {"lm_eval": [], "mechlin": [], "mechlin_with_letters": []}
for _ in range(args.repeat):
    t_l, pick_l, norm_l, res_l = run_lm_eval()
    t_m, pick_m, norm_m, res_m = run_mechlin(letters=False)
    t_f, pick_f, norm_f, _ = run_mechlin(letters=True)
    times["lm_eval"].append(t_l)
    times["mechlin"].append(t_m)
    times["mechlin_with_letters"].append(t_f)

same_acc = pick_l == pick_m == pick_f
same_norm = norm_l == norm_m == norm_f
best_l, best_m = min(times["lm_eval"]), min(times["mechlin"])
best_f = min(times["mechlin_with_letters"])
n_options = sum(len(it.choices) for it in ds)
result = {
    "model": args.model,
    "vocab": int(model.cfg.d_vocab),
    "items": len(ds),
    "options": n_options,
    "batch_size": args.batch_size,
    "threads": torch.get_num_threads(),
    "lm_eval": {
        "acc": res_l["acc,none"],
        "acc_norm": res_l["acc_norm,none"],
        "seconds": times["lm_eval"],
        "version": lm_eval.__version__,
    },
    "mechlin": {"acc": res_m.acc, "acc_norm": res_m.acc_norm, "seconds": times["mechlin"]},
    "mechlin_with_letters": {"seconds": times["mechlin_with_letters"]},
    "same_choice_every_item": {"acc": same_acc, "acc_norm": same_norm},
    "differing_items": [i for i in range(len(ds)) if pick_l[i] != pick_m[i]],
    "speedup": best_l / best_m,
    "speedup_with_letters": best_l / best_f,
    "machine": platform.processor() or platform.machine(),
    "torch": torch.__version__,
}
print(f"{args.model} (vocab {result['vocab']}), {len(ds)} ARC-Easy dev items, {n_options} options")
print(
    f"lm-eval {lm_eval.__version__}: acc {res_l['acc,none']:.4f} acc_norm "
    f"{res_l['acc_norm,none']:.4f}  best {best_l:7.2f} s  {len(ds) / best_l:6.2f} items/s"
)
print(
    f"mechlin:       acc {res_m.acc:.4f} acc_norm {res_m.acc_norm:.4f}  best {best_m:7.2f} s  "
    f"{len(ds) / best_m:6.2f} items/s (cloze only, lm-eval's work)"
)
print(f"mechlin with letters: best {best_f:7.2f} s  {len(ds) / best_f:6.2f} items/s")
print(f"same choice on every item: acc {same_acc}, acc_norm {same_norm}")
print(
    f"speed-up {result['speedup']:.2f}x on lm-eval's work, {result['speedup_with_letters']:.2f}x "
    f"with the letters as well (best of {args.repeat} each)"
)
if args.json:
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
