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
# # Dissecting factual recall (Geva et al. 2023)
#
# Geva et al. describe recall in three stages, each measured by an intervention:
#
# 1. **Subject enrichment**: MLPs write attributes of the subject into its last token's
#    residual stream (the *attributes rate*: how many attribute words the token's lens ranks high).
# 2. **Relation propagation**: attention carries the relation to the last position (blocking the
#    last position's attention to non-subject tokens hurts, early).
# 3. **Attribute extraction**: attention heads at the last position read the attribute out of
#    the subject (blocking attention to the subject hurts, later; MHSA outputs often *are* the
#    answer as top-1 token, MLP outputs rarely).

# %% tags=["parameters"]
import os

MODEL = os.environ.get("MECHLIN_NOTEBOOK_MODEL", "smollm2-135m")
SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
# sizes: the default, or the small size CI runs
N_FACTS = 3 if SMALL else 12  # facts from each shipped source, before the known filter

# %%
from IPython.display import HTML, display

import mechlin
from mechlin.datasets.countries import country_facts
from mechlin.datasets.facts import load_known_1000
from mechlin.viz import head_patterns_html

model = mechlin.load_model(MODEL, device="cpu")
known, countries = load_known_1000(), country_facts()
facts = (
    known[:: len(known) // N_FACTS][:N_FACTS] + countries[:: len(countries) // N_FACTS][:N_FACTS]
)
print(f"{len(facts)} facts, e.g. {facts[0].prompt!r} -> {facts[0].attribute!r}")

# %% [markdown]
# ## All three stages in one call
#
# `dissect_recall` keeps the facts the model knows and measures each stage; its summary states
# the findings next to the paper's.

# %%
dissection = mechlin.dissect_recall(model, facts, progress=False)
dissection

# %% [markdown]
# ## Attention knockout: relation propagation and attribute extraction

# %%
dissection.knockout

# %% [markdown]
# ## Extraction rates: MHSA vs MLP

# %%
dissection.extraction

# %% [markdown]
# ## Subject enrichment: the attributes rate by layer

# %%
dissection.attributes

# %% [markdown]
# ## The heads that extract
#
# The attention patterns of the heads whose outputs most often give the answer as top-1 token.

# %%
ex = dissection.extraction
rate = ex.head_events.float().mean(0)  # (layer, head): share of prompts extracted by that head
top = rate.flatten().argsort(descending=True)[:3].tolist()
heads = [divmod(i, rate.shape[1]) for i in top]
print("top extracting heads:", [f"L{la}H{h} ({rate[la, h]:.0%})" for la, h in heads])
display(HTML(head_patterns_html(model, ex.prompts[0], heads)))

# %% [markdown]
# `dissection.report("dissect.html")` writes all of this as one offline page.
