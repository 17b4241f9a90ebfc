# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sparse probing of neurons (Gurnee et al. 2023)
#
# Which MLP neurons carry a feature, say "this text is French"? A **k-sparse probe** is a
# logistic regression allowed to read only k neurons, chosen on the training split (here by the
# difference of class means). If k = 1 already decodes the feature, one neuron may be dedicated
# to it - but a high F1 is not enough, so `classify_neurons` also checks how often the neuron
# fires on unrelated text and what mean-ablating it does to the language-model loss. A sharp
# gain from k = 1 to k ~ 5 says the feature is spread over neurons (superposition).

# %% tags=["parameters"]
import os

MODEL = os.environ.get("MECHLIN_NOTEBOOK_MODEL", "smollm2-135m")
SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
# sizes: the default, or the small size CI runs
N_PER_LANGUAGE = 8 if SMALL else 40
LAYERS = [2, 8] if SMALL else [1, 4, 8, 12, 16, 20, 24, 28]

# %%
from IPython.display import HTML, display

import mechlin
from mechlin.datasets import features as fd
from mechlin.neurons.verdicts import neuron_activations_html

model = mechlin.load_model(MODEL, device="cpu")
languages = fd.language_identity(n_per_language=N_PER_LANGUAGE)
print(f"{len(languages)} Europarl sentences in {len(languages.classes)} languages")
print(languages.texts[0][:100])

# %% [markdown]
# ## Activations
#
# One `[example, neuron]` matrix per layer (mean over each sentence's tokens; exact under
# batching).

# %%
hooks = [mechlin.hook_name(model, "mlp_post", layer) for layer in LAYERS]
acts = mechlin.collect_activations(model, languages, hooks=hooks, pooling="mean", progress=False)
X = acts[hooks[-1]]
print(f"layer {LAYERS[-1]}: {tuple(X.shape)} (examples, neurons)")

# %% [markdown]
# ## A k-sparse probe and the sweep over k
#
# French against the other ten languages, at the last probed layer.

# %%
french = languages.classes.index("fr")
probe = mechlin.sparse_probe(X, languages.labels, k=1, positive=french, split="stratified")
print(f"k = 1: neuron {probe.neurons.tolist()}, held-out F1 {probe.f1:.2f}")
sweep = mechlin.probe_sweep(
    X, languages.labels, positive=french, ks=(1, 2, 4, 8, 16), split="stratified",
    n_shuffles=1, name="French vs rest",
)  # fmt: skip
sweep

# %% [markdown]
# ## Verdicts with evidence
#
# For every language: the best single neuron per layer (heatmap), the F1-vs-k and pruning
# curves, and a verdict table with the numbers each verdict was decided on.

# %%
report = mechlin.classify_neurons(
    model,
    {"language": languages},
    broad_texts=fd.broad_text(n=16 if SMALL else 64),
    layers=LAYERS,
    n_ablation_texts=4 if SMALL else 16,
    activations={"language": acts},
    progress=False,
)
report

# %% [markdown]
# ## The neurons on text
#
# circuitsvis shows each chosen neuron's activation on every token (hover a token; pick a neuron
# above the text).

# %%
best = [(report.verdict(f"language:{c}").layer, report.verdict(f"language:{c}").neuron)
        for c in ("fr", "de", "en")]  # fmt: skip
samples = [languages.texts[i] for i in range(0, len(languages), max(1, len(languages) // 6))][:6]
display(HTML(neuron_activations_html(model, samples, sorted(set(best)))))
