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
# # Toy models of superposition (Elhage et al. 2022) and capacity (Scherlis et al. 2022)
#
# A toy autoencoder squeezes n sparse features into d < n dimensions: `x' = ReLU(W^T W x + b)`.
# Each feature has an *importance* (its weight in the loss) and a *density* (1 - sparsity).
# Dense features get a dimension each or are dropped; once features are sparse enough the model
# stores more features than dimensions, as nearly-orthogonal directions that interfere rarely:
# **superposition**. Scherlis et al.'s *capacity* C_i (0..1) says how much of a dimension
# feature i gets: dedicated (1), shared, or ignored (0), in order of importance.

# %% tags=["parameters"]
import os

SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
# sizes: the default, or the small size CI runs
STEPS = 300 if SMALL else 3000
GRID = 3 if SMALL else 8

# %%
import mechlin

# %% [markdown]
# ## One toy: 5 features in 2 dimensions
#
# Dense (S = 0) against sparse (S = 0.9): the plot shows `W^T W` and each feature's norm.

# %%
toy = mechlin.toy_superposition(5, 2, sparsity=[0.0, 0.9], importance=0.9, steps=STEPS, lr=1e-2)
toy

# %% [markdown]
# ## The phase diagram and the capacity allocation
#
# n = 2 features in d = 1: the second feature's importance against sparsity; then n = 20,
# d = 5 with importance 0.7^i across sparsities.

# %%
sweep = mechlin.superposition_sweep(grid=GRID, n_seeds=1, steps=STEPS, lr=1e-2)
sweep
