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
# # Concept directions and steering (Park, Choe & Veitch 2024)
#
# The *linear representation hypothesis*: a concept such as male -> female is one direction.
# Park et al. estimate it in **unembedding space** from counterfactual word pairs (king/queen,
# man/woman, ...) under the **causal inner product** - the one that whitens the unembedding
# vectors - under which causally separable concepts (gender, language) come out orthogonal.
# Three tests: orthogonality of the directions (causal vs Euclidean), linearity (a held-out
# pair's difference projects onto the direction far more than random pairs), and steering (add
# the direction to the final hidden state and "king" turns into "queen").

# %% tags=["parameters"]
import os

MODEL = os.environ.get("MECHLIN_NOTEBOOK_MODEL", "smollm2-135m")
SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
# sizes: the default, or the small size CI runs
N_RANDOM = 2_000 if SMALL else 100_000  # random pairs of the linearity test (Park: 100,000)

# %%
import mechlin

model = mechlin.load_model(MODEL, device="cpu")
causal = mechlin.concept_directions(model, too_few="skip")
euclid = mechlin.concept_directions(model, inner_product="euclidean", too_few="skip")
causal

# %% [markdown]
# ## Orthogonality
#
# |cosine| between every two concept directions: smaller off the diagonal under the causal inner
# product (Park et al. on LLaMA-2-7B: 0.046 causal vs 0.069 Euclidean).

# %%
orth = mechlin.orthogonality(causal, euclid)
orth

# %% [markdown]
# ## Linearity

# %%
lin = mechlin.linearity_test(model, causal, n_random=N_RANDOM)
print("failing linearity:", list(lin.failed) or "none")
lin

# %% [markdown]
# ## Steering "Long live the"
#
# Add alpha times the male -> female direction (as a steering vector in hidden-state space) at
# the last position and watch log p(queen) / p(king) rise; the other pairs should barely move.

# %%
pairs = {"male -> female": ("king", "queen"), "lower -> upper": ("king", "King"),
         "noun -> plural": ("king", "kings")}  # fmt: skip
pairs = {
    c: w for c, w in pairs.items() if all(len(mechlin.answer_tokens(model, x)) == 1 for x in w)
}
vector = causal.steering_vector("male -> female").float()
alphas = [i / 20 for i in range(6 if SMALL else 11)]
sweep = mechlin.steering_sweep(model, "Long live the", vector, pairs=pairs, alphas=alphas)
print("queen overtakes king at alpha =", sweep.crossover("male -> female"))
sweep
