"""Why linear representations arise: the latent-concept model of Jiang et al. (ICML 2024).

``LatentConceptModel`` is a random DAG of binary concepts with Bernoulli conditionals; contexts
fix some concepts and the next token is a full concept vector drawn given them.
``train_origins`` fits a softmax next-token model ``f(x) . g(y)`` to it by SGD or Adam and
records, over training, how parallel each concept's pair differences are (linearity) and how
orthogonal independent concepts' directions are; ``origins_sweep`` runs the paper's robustness
experiments (incomplete contexts and concepts, small ``d``, SGD vs Adam) in one call; and
``embedding_unembedding_alignment`` checks on a real model that a concept's direction among
final hidden states aligns with its unembedding direction, matched against mismatched concepts.
"""

from mechlin.origins.alignment import (
    EmbeddingUnembeddingAlignment,
    default_contexts,
    embedding_unembedding_alignment,
    language_contexts,
    word_contexts,
)
from mechlin.origins.latent import LatentConceptModel, TokenSet, build_tokens
from mechlin.origins.measures import concept_gram, differing_pairs, linearity, mean_pairwise_cosine
from mechlin.origins.sweep import OriginsSweep, origins_sweep
from mechlin.origins.training import OriginsRun, expected_loss, train_origins

__all__ = [
    "EmbeddingUnembeddingAlignment",
    "LatentConceptModel",
    "OriginsRun",
    "OriginsSweep",
    "TokenSet",
    "build_tokens",
    "concept_gram",
    "default_contexts",
    "differing_pairs",
    "embedding_unembedding_alignment",
    "expected_loss",
    "language_contexts",
    "linearity",
    "mean_pairwise_cosine",
    "origins_sweep",
    "train_origins",
    "word_contexts",
]
