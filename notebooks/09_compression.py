# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Compression is prediction
#
# A language model's next-token probabilities drive a range coder: each token costs about
# `-log2 p(token | context)` bits, so the compressed size *is* the model's cross-entropy, and a
# better model writes a smaller file (Delétang et al. 2023; Huang et al. 2024). Here: compress
# a text the model cannot have seen (mechlin's own docs, written in 2026), decode it exactly,
# compare with gzip, xz, zstd and brotli, and look at where the model is surprised.

# %% tags=["parameters"]
import os

MODEL = os.environ.get("MECHLIN_NOTEBOOK_MODEL", "smollm2-135m")
SMALL = os.environ.get("MECHLIN_NOTEBOOK_SIZE", "default") == "small"  # CI runs it small

# %%
# sizes: the default, or the small size CI runs
N_BYTES = 1500 if SMALL else 12000
WINDOW = 128 if SMALL else 512

# %%
from pathlib import Path

import mechlin

corpus = Path("..") / "benchmarks" / "corpus" / "mechlin-2026.txt"
if not corpus.is_file():  # run from the repository root
    corpus = Path("benchmarks") / "corpus" / "mechlin-2026.txt"
data = corpus.read_bytes()[:N_BYTES]
model = mechlin.load_model(MODEL)

# %% [markdown]
# ## A real file, decoded exactly

# %%
blob = mechlin.compress(model, data, window=WINDOW, progress=False)
assert mechlin.decompress(model, blob, progress=False) == data
from mechlin.compression import read_header

header = read_header(blob)
print(f"{len(data):,} bytes -> {len(blob):,} bytes ({8 * len(blob) / len(data):.2f} bits/byte)")
print(f"header: {header.header_bytes} bytes; {header.environment}")

# %% [markdown]
# ## Beside the classic compressors

# %%
report = mechlin.compression_report(model, data, window=WINDOW, progress=False)
report

# %% [markdown]
# ## Where the model is surprised
#
# Red tokens cost many bits (hover for bits, rank and entropy). Overlapping windows (Huang et
# al.'s stride) give each token more context than the coder's independent windows.

# %%
strided = mechlin.surprisal(model, data, window=WINDOW, stride=WINDOW // 4, progress=False)
print(strided.summary())
strided.plot()

# %%
from IPython.display import HTML

HTML(strided.surprise_map(max_tokens=600))
