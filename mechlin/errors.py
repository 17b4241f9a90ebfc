"""Every exception mechlin raises on purpose. Each message says what is wrong and how to fix it.

All derive from ``MechlinError``, and each also derives from the built-in exception that fits
(``ValueError``, ``TypeError``, ``KeyError``, ...), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class MechlinError(Exception):
    """Base class of every error mechlin raises on purpose."""


class _KeyMessage:
    """KeyError would repr() the message: show it as written."""

    args: tuple[object, ...]

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- arguments ------------------------------------------------------------------------------


class ArgumentError(MechlinError, ValueError):
    """An argument has a value mechlin cannot use (an unknown option, a number out of range)."""


class ArgumentTypeError(MechlinError, TypeError):
    """An argument has the wrong type or shape."""


class OutOfRangeError(MechlinError, IndexError, ValueError):
    """A layer, position or index lies outside what the model or result has."""


class EmptyInputError(ArgumentError):
    """A dataset, fact list or string that must not be empty is empty."""


class NotInResultError(_KeyMessage, MechlinError, KeyError):
    """A result was asked for a feature, hook, concept or grid point it does not hold."""


# --- models, tokens, sites -----------------------------------------------------------------


class UnknownModelError(ArgumentError):
    """The model name is neither bundled, nor a local directory, nor loadable from the hub."""


class MissingModelPackageError(MechlinError, ImportError):
    """A bundled model's weights package is not installed."""


class MissingExtraError(MechlinError, ImportError):
    """An optional dependency (an extra of mechlin, such as ``ray``) is not installed."""


class SubjectNotFoundError(ArgumentError):
    """The subject string does not occur in the prompt."""


class MultiTokenAnswerError(ArgumentError):
    """An analysis that scores one token was given an answer of several tokens."""


class TokenizationError(MechlinError, RuntimeError):
    """The model's tokens are not the tokenizer's ids plus a prefix (positions would shift)."""


class MissingHookError(_KeyMessage, MechlinError, KeyError):
    """The model exposes no hook point for the requested site."""


# --- stores ---------------------------------------------------------------------------------


class StoreMismatchError(ArgumentError):
    """An ``out=`` directory holds results of other inputs, options or a store of another kind."""


class NotAStoreError(MechlinError, FileNotFoundError):
    """A directory is not a mechlin store (no index file)."""


# --- area-specific inputs -------------------------------------------------------------------


class ProbeInputError(ArgumentError):
    """Activations or labels a probe cannot be fitted on."""


class ConceptPairError(ArgumentError):
    """A concept has too few usable counterfactual pairs, or names an unknown shipped concept."""


class TooFewPairsError(ConceptPairError):
    """A concept keeps fewer than 2 usable pairs; ``dropped`` lists the others and why."""

    def __init__(self, dropped: list[tuple[str, str, str, str]], message: str) -> None:
        super().__init__(message)
        self.dropped = dropped


class BigramNotFoundError(ArgumentError):
    """A bigram has no positive (or no negative) occurrence in the shipped Gutenberg sample."""


class NotSupportedError(MechlinError, NotImplementedError):
    """The model or result lacks what this operation needs (a plot, a replayable layer list)."""


class DuplicateResultError(MechlinError, TypeError):
    """Two result classes share a name, so saved files could not tell them apart."""


class CacheError(MechlinError, OSError):
    """The model cache cannot be written (set MECHLIN_CACHE to a writable directory)."""


class OptimizationError(MechlinError, RuntimeError):
    """A solver mechlin runs (the optimal-sparse-probe MIP) found no solution."""


# --- compression ----------------------------------------------------------------------------


class CompressedFileError(MechlinError, ValueError):
    """Data given to ``decompress`` is not an intact mechlin file (damaged, truncated, foreign)."""


class WrongModelError(ArgumentError):
    """A compressed file was written with another model (or tokenizer) than the one given."""


class DecodingMismatchError(MechlinError, RuntimeError):
    """This machine decodes a compressed file differently from the one that wrote it."""


__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "BigramNotFoundError",
    "CacheError",
    "CompressedFileError",
    "ConceptPairError",
    "DecodingMismatchError",
    "DuplicateResultError",
    "EmptyInputError",
    "MechlinError",
    "MissingExtraError",
    "MissingHookError",
    "MissingModelPackageError",
    "MultiTokenAnswerError",
    "NotAStoreError",
    "NotInResultError",
    "NotSupportedError",
    "OptimizationError",
    "OutOfRangeError",
    "ProbeInputError",
    "StoreMismatchError",
    "SubjectNotFoundError",
    "TokenizationError",
    "TooFewPairsError",
    "UnknownModelError",
    "WrongModelError",
]
