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
# # Why linear representations arise (Jiang et al. 2024)
#
# Jiang et al.'s *latent-concept model*: binary concepts on a random DAG; a context fixes some
# of them and the next token is a full concept vector drawn given them. Train a softmax
# next-token model `f(x) . g(y)` on it with SGD and watch each concept's token-pair differences
# `g(y1) - g(y0)` become parallel (**linearity**, mean pairwise cosine) as the loss falls, while
# independent concepts' directions become nearly orthogonal. Then on a real model: a concept's
# direction among final hidden states aligns with its unembedding direction.

# %% tags=["parameters"]
import os

MODEL = os.environ.get("MECHLIN_NOTEBOOK_MODEL", "smollm2-135m")
SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
# sizes: the default, or the small size CI runs
STEPS = 300 if SMALL else 2000
MAX_PAIRS = 4 if SMALL else 20

# %%
import mechlin
from mechlin.origins import LatentConceptModel, default_contexts

lcm = LatentConceptModel(8, seed=0)
lcm

# %% [markdown]
# ## One training run

# %%
run = mechlin.train_origins(lcm, steps=STEPS, record_every=max(1, STEPS // 20))
run

# %% [markdown]
# ## On a bundled model: context directions vs unembedding directions
#
# Final hidden states of contexts whose next word is the base vs the target word give a
# context direction per concept; compare it with the concept's unembedding direction (causal
# inner product). Matched concepts should align far more than mismatched ones.

# %%
model = mechlin.load_model(MODEL, device="cpu")
concepts = ["male -> female", "English -> French", "noun -> plural", "lower -> upper"]
dirs = mechlin.concept_directions(model, concepts, too_few="skip")
align = mechlin.embedding_unembedding_alignment(
    model, dirs, default_contexts(dirs, max_pairs=MAX_PAIRS)
)
align
