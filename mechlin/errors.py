"""Exceptions mechlin raises for bad input. Each message says what is wrong and how to fix it."""

from __future__ import annotations


class MechlinError(Exception):
    """Base class of every error mechlin raises on purpose."""


class UnknownModelError(MechlinError, ValueError):
    """The model name is neither bundled, nor a local directory, nor loadable from the hub."""


class MissingModelPackageError(MechlinError, ImportError):
    """A bundled model's weights package is not installed."""


class SubjectNotFoundError(MechlinError, ValueError):
    """The subject string does not occur in the prompt."""


class MultiTokenAnswerError(MechlinError, ValueError):
    """An analysis that scores one token was given an answer of several tokens."""


class MissingHookError(MechlinError, KeyError):
    """The model exposes no hook point for the requested site."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class EmptyInputError(MechlinError, ValueError):
    """A dataset, fact list or string that must not be empty is empty."""
