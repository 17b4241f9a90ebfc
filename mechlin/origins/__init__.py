"""Why linear representations arise: the latent-concept model of Jiang et al. (ICML 2024).

``LatentConceptModel`` is a random DAG of binary concepts with Bernoulli conditionals; contexts
fix some concepts and the next token is a full concept vector drawn given them.
``train_origins`` fits a softmax next-token model ``f(x) . g(y)`` to it by SGD or Adam and
records, over training, how parallel each concept's pair differences are (linearity) and how
orthogonal independent concepts' directions are; ``origins_sweep`` runs the paper's robustness
experiments (incomplete contexts and concepts, small ``d``, SGD vs Adam) in one call;
``origins_grid`` trains many (m, d, seed) instances at once by gradient descent on the exact
loss, to convergence, with capacity and support controls; ``fixed_embedding_check`` checks
gradient descent's implicit bias against the closed-form hard-margin direction; and
``embedding_unembedding_alignment`` checks on a real model that a concept's direction among
final hidden states aligns with its unembedding direction, matched against mismatched concepts
(with a permutation baseline and bootstrap intervals; ``reproduce_alignment`` runs it on the
shipped concepts under both inner products, ``alignment_report`` on several models into JSON).
"""

from mechlin.origins.alignment import (
    EmbeddingUnembeddingAlignment,
    alignment_report,
    default_contexts,
    embedding_unembedding_alignment,
    language_contexts,
    reproduce_alignment,
    word_contexts,
)
from mechlin.origins.grid import OriginsGrid, origins_grid
from mechlin.origins.implicit_bias import (
    FixedEmbeddingCheck,
    fixed_embedding_check,
    max_margin_unembeddings,
)
from mechlin.origins.latent import LatentConceptModel, TokenSet, build_tokens
from mechlin.origins.measures import concept_gram, differing_pairs, linearity, mean_pairwise_cosine
from mechlin.origins.sweep import OriginsSweep, origins_sweep
from mechlin.origins.training import OriginsRun, expected_loss, train_origins

__all__ = [
    "EmbeddingUnembeddingAlignment",
    "FixedEmbeddingCheck",
    "LatentConceptModel",
    "OriginsGrid",
    "OriginsRun",
    "OriginsSweep",
    "TokenSet",
    "alignment_report",
    "build_tokens",
    "concept_gram",
    "default_contexts",
    "differing_pairs",
    "embedding_unembedding_alignment",
    "expected_loss",
    "fixed_embedding_check",
    "language_contexts",
    "linearity",
    "max_margin_unembeddings",
    "mean_pairwise_cosine",
    "origins_grid",
    "origins_sweep",
    "reproduce_alignment",
    "train_origins",
    "word_contexts",
]
