"""The data mechlin ships, next to its loaders: every file is in ``data/``, sources in its README.

``facts``: ROME's ``known_1000`` prompts and the "model knows this fact" filter; ``countries``:
an offline country knowledge base (prompts and subject attributes); ``features``: labelled
feature datasets for sparse probing (Europarl languages, Gutenberg compounds, token
properties, position); ``concept_pairs``: counterfactual word pairs of linear concepts;
``mcq``: multiple-choice questions (ARC-Easy/Challenge, OpenBookQA, CommonsenseQA).
"""

from mechlin.datasets.concept_pairs import Concept, load_concepts
from mechlin.datasets.countries import country_attributes, country_facts, load_countries
from mechlin.datasets.facts import Fact, KnownFacts, known_facts, load_known_1000
from mechlin.datasets.features import FeatureDataset
from mechlin.datasets.mcq import MCQ_SETS, MCQDataset, MCQItem, load_mcq

__all__ = [
    "MCQ_SETS",
    "Concept",
    "Fact",
    "FeatureDataset",
    "KnownFacts",
    "MCQDataset",
    "MCQItem",
    "country_attributes",
    "country_facts",
    "known_facts",
    "load_concepts",
    "load_countries",
    "load_known_1000",
    "load_mcq",
]
