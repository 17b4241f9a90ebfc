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
# # Cognition vs expression (Yan et al. 2024)
#
# *Cognition*: what the hidden states know, read by a linear probe per layer that predicts the
# right option of a multiple-choice question. *Expression*: what the model says, its own answer
# accuracy (option log-likelihoods the lm-evaluation-harness way, or the letter it picks). Yan
# et al. find cognition set in pretraining and expression rising with fine-tuning; few-shot
# prompts and repeated sampling (pass@k) narrow the gap. Small models and small splits make
# these numbers noisy: read the chance level and the shuffled-label control beside them.

# %% tags=["parameters"]
import os

MODEL = os.environ.get("MECHLIN_NOTEBOOK_MODEL", "smollm2-135m")
SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
# sizes: the default, or the small size CI runs
N_ITEMS = 24 if SMALL else 200
N_SAMPLES = 4 if SMALL else 16

# %%
import mechlin

arc = mechlin.load_mcq("arc_easy", n=N_ITEMS)  # shipped ARC-Easy dev (CC BY-SA 4.0)
model = mechlin.load_model(MODEL, device="cpu")
arc[0]

# %% [markdown]
# ## Expression: option likelihoods, letters, pass@k

# %%
mechlin.score_options(
    model, "Question: Which animal is a mammal?\nAnswer:", [" a whale", " a shark"]
)

# %%
expression = mechlin.expression_scores(model, arc, n_samples=N_SAMPLES)
expression

# %% [markdown]
# ## Cognition: a linear probe per layer on the last prompt token

# %%
cognition = mechlin.probe_cognition(model, arc, pca_dim=16)
cognition

# %% [markdown]
# ## Both, and the gap (one model here; pass a mapping of checkpoints for the journey)

# %%
result = mechlin.cognition_vs_expression(
    {MODEL: model}, arc, pass_k=(1, min(4, N_SAMPLES)), n_samples=N_SAMPLES, pca_dim=16
)
result
