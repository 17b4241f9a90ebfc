# %% [markdown]
# # A first look at factual recall in a bundled model
#
# For a handful of ROME `known_1000` facts: the model's top next-token predictions, the
# logit-lens rank of the true attribute at every layer, and the attention pattern of the head
# that looks hardest at the subject from the last position. Everything is written to one HTML
# file that opens offline.
#
# Run: `python demos/first_look.py [--model gemma-3-270m] [--n-facts 8] [--out PATH]`

# %%
from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import mechlin
from mechlin.datasets.facts import load_known_1000, next_token_logits
from mechlin.recall.lens import answer_lens
from mechlin.viz import attention_pattern_html, figure_to_html, write_report

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", default="gemma-3-270m", choices=sorted(mechlin.BUNDLED_MODELS))
parser.add_argument("--n-facts", type=int, default=8)
parser.add_argument("--out", type=Path, default=Path("demos/out/first_look.html"))
args = parser.parse_args([] if "ipykernel" in sys.modules else None)

# %% Load the model (the first run dequantizes and caches the weights; later runs take seconds)
model = mechlin.load_model(args.model)
facts = load_known_1000()[: args.n_facts]
print(
    f"{args.model}: {model.cfg.n_layers} layers, {model.cfg.n_heads} heads, "
    f"prepend BOS: {model.cfg.default_prepend_bos}"
)

# %% Top next-token predictions
logits = next_token_logits(model, [f.prompt for f in facts])
probs = logits.softmax(-1)
top_p, top_i = probs.topk(5, dim=-1)
rows = []
for fact, ps, ids in zip(facts, top_p.tolist(), top_i.tolist(), strict=True):
    preds = [model.tokenizer.decode([i]) for i in ids]
    hit = mechlin.answer_tokens(model, fact.attribute)[0] == ids[0]
    print(
        f"{'OK ' if hit else '-- '}{fact.prompt!r} -> {preds[0]!r} ({ps[0]:.2f}); "
        f"true: {fact.attribute!r}"
    )
    cells = "".join(
        f"<td>{html.escape(t)!s} <small>{p:.2f}</small></td>"
        for t, p in zip(preds, ps, strict=True)
    )
    rows.append(
        f"<tr><td>{'✓' if hit else '✗'}</td><td>{html.escape(fact.prompt)}</td>"
        f"<td>{html.escape(fact.attribute)}</td>{cells}</tr>"
    )
table = (
    "<table><tr><th></th><th>prompt</th><th>attribute</th>"
    + "".join(f"<th>top {k + 1}</th>" for k in range(5))
    + "</tr>"
    + "".join(rows)
    + "</table>"
)

# %% Logit lens: rank of the attribute's first token, layer by layer
lenses = [answer_lens(model, f.prompt, f.attribute) for f in facts]
fig, ax = plt.subplots(figsize=(9, 4))
for fact, lens in zip(facts, lenses, strict=True):
    ax.plot((lens.ranks + 1).tolist(), marker=".", label=f"{fact.subject} → {lens.answer_token!r}")
ax.set_yscale("log")
ax.invert_yaxis()
ax.set_xticks(range(len(lenses[0].labels)), lenses[0].labels, rotation=90, fontsize=7)
ax.set_ylabel("rank of the attribute (1 = top)")
ax.legend(fontsize=7, loc="lower left")
fig.tight_layout()
lens_html = figure_to_html(fig)
plt.close(fig)
for fact, lens in zip(facts, lenses, strict=True):
    print(
        f"  lens: {fact.subject!r}: attribute first top-1 at entry "
        f"{lens.first_top1_layer} of {len(lens.labels)}; final rank {int(lens.ranks[-1])}"
    )

# %% The head that attends most from the last position to the subject
fact = facts[0]
start, end = mechlin.find_subject_span(model, fact.prompt, fact.subject)
names = mechlin.hook_names(model, "attn_pattern")
with torch.no_grad():
    _, cache = model.run_with_cache(model.to_tokens(fact.prompt), names_filter=names)
# (layer, head): attention mass from the last position onto the subject tokens
mass = torch.stack([cache[n][0, :, -1, start:end].sum(-1) for n in names])
layer, head = divmod(int(mass.argmax()), mass.shape[1])
print(
    f"head L{layer}H{head} puts {mass[layer, head]:.2f} of the last position's attention "
    f"on the subject {fact.subject!r} (tokens {start}..{end - 1})"
)
pattern_html = attention_pattern_html(model, fact.prompt, layer, heads=[head])

# %% Write the report
path = write_report(
    args.out,
    f"mechlin first look: {args.model}",
    [
        ("Top next-token predictions (known_1000)", table),
        ("Logit lens: rank of the attribute across layers", lens_html),
        (
            f"Attention of head L{layer}H{head} on {fact.prompt!r} "
            f"(attention mass {mass[layer, head]:.2f} from the last token on the subject)",
            pattern_html,
        ),
    ],
)
print(f"wrote {path}")
