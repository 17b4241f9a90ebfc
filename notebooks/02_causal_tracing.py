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
# # Causal tracing (Meng et al. 2022, ROME)
#
# Where does a model keep a fact? Run the prompt three times: **clean**; **corrupted** (Gaussian
# noise, 3 standard deviations of the embeddings, added to the subject's token embeddings, so the
# answer's probability collapses); and corrupted but with one hidden state **restored** to its
# clean value. The probability the restoration brings back is that state's *indirect effect*.
# ROME finds two peaks: the last subject token in the middle layers (MLP outputs) and the last
# token in late layers (attention outputs).

# %% tags=["parameters"]
import os

MODEL = os.environ.get("MECHLIN_NOTEBOOK_MODEL", "smollm2-135m")
SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
# sizes: the default, or the small size CI runs
N_SAMPLES = 2 if SMALL else 10  # noise samples (ROME: 10)
N_FACTS = 1 if SMALL else 4  # known facts averaged

# %%
import mechlin
from mechlin.datasets.facts import known_facts, load_known_1000

model = mechlin.load_model(MODEL, device="cpu")

# %% [markdown]
# ## One fact, three kinds of state
#
# `kind="resid"` restores the whole residual stream at one (layer, token); `"mlp"` and `"attn"`
# restore a window of 10 consecutive MLP or attention outputs around that layer.

# %%
prompt, subject = "The Eiffel Tower is located in the city of", "Eiffel Tower"
trace = mechlin.causal_trace(model, prompt, subject, kind="resid", n_samples=N_SAMPLES)
trace

# %%
mlp = mechlin.causal_trace(model, prompt, subject, kind="mlp", n_samples=N_SAMPLES)
mlp

# %%
attn = mechlin.causal_trace(model, prompt, subject, kind="attn", n_samples=N_SAMPLES)
attn

# %% [markdown]
# ## Averaged over facts the model knows
#
# ROME averages over known facts and groups positions into buckets (first / middle / last
# subject token, first subsequent token, further tokens, last token). `known_facts` keeps the
# facts whose greedy answer is right.

# %%
split = known_facts(model, load_known_1000()[:200], progress=False)
print(split)
ace = mechlin.average_causal_effects(
    model, list(split.known[:N_FACTS]), n_samples=N_SAMPLES, progress=False
)
ace
