"""The data mechlin ships, next to its loaders: every file is in ``data/``, sources in its README.

``facts``: ROME's ``known_1000`` prompts and the "model knows this fact" filter; ``countries``:
an offline country knowledge base (prompts and subject attributes); ``features``: labelled
feature datasets for sparse probing (Europarl languages, Gutenberg compounds, token
properties, position); ``concept_pairs``: counterfactual word pairs of linear concepts.
"""

from mechlin.datasets.concept_pairs import Concept, load_concepts
from mechlin.datasets.countries import country_attributes, country_facts, load_countries
from mechlin.datasets.facts import Fact, KnownFacts, known_facts, load_known_1000
from mechlin.datasets.features import FeatureDataset

__all__ = [
    "Concept",
    "Fact",
    "FeatureDataset",
    "KnownFacts",
    "country_attributes",
    "country_facts",
    "known_facts",
    "load_concepts",
    "load_countries",
    "load_known_1000",
]
