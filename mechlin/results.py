"""The one contract every analysis result keeps: summary, plot, notebook view, table, save/load.

A result is a frozen dataclass of tensors, numbers, strings and tuples of those (or of other
results) that derives from ``Result``:

* ``summary() -> str``: a few lines a researcher reads first (what was measured, the headline
  numbers). The default names the class and its scalar fields.
* ``plot(ax=None) -> Figure``: draws into ``ax`` (a new figure when ``None``) and returns the
  figure, never shows it; multi-panel results take ``fig=None`` instead. ``viz.axes`` and
  ``viz.figure`` make the figure, so only ``mechlin.viz`` imports pyplot.
* ``_repr_html_()``: the notebook view, by default the summary and the plot as an inline PNG.
* ``to_frame() -> pandas.DataFrame``: one row per measured cell.
* ``save(path)`` / ``load(path)``: ``torch.save`` of plain data; ``load`` reads with
  ``weights_only=True`` (no code runs on load) and checks the file holds that kind of result.

Every result class registers its name; two classes of one name would make saved files
ambiguous, so a duplicate raises at import.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from mechlin import viz
from mechlin._store import atomic_write
from mechlin.errors import ArgumentError, DuplicateResultError, NotSupportedError

_KIND = "__mechlin_result__"
R = TypeVar("R", bound="Result")

_REGISTRY: dict[str, type[Result]] = {}


class Result:
    """Base of every result: ``summary``, ``plot``, ``_repr_html_``, ``to_frame``, save/load.

    Fields may themselves be results (a dissection holds its pieces); they are saved inline.
    """

    _plottable: ClassVar[bool] = True  # False for results without a figure (HTML view: summary)
    _renamed: ClassVar[dict[str, str]] = {}  # old field name -> new, read by ``load``

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in _REGISTRY and _REGISTRY[cls.__name__] is not cls:
            old = _REGISTRY[cls.__name__]
            raise DuplicateResultError(
                f"two result classes are named {cls.__name__!r} ({old.__module__} and "
                f"{cls.__module__}): saved files could not tell them apart; rename one"
            )
        _REGISTRY[cls.__name__] = cls

    # --- what a reader sees ---------------------------------------------------------------

    def summary(self) -> str:
        """A few lines: the class and its scalar fields (results override with their story)."""
        scalars = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if isinstance(getattr(self, f.name), int | float | str | bool | None)
        ]
        return f"{type(self).__name__}({', '.join(scalars)})"

    def plot(self, ax: Any = None) -> Any:
        """Draw the result (into ``ax`` if given) and return the figure."""
        raise NotSupportedError(f"{type(self).__name__} has no plot")

    def to_frame(self) -> Any:
        """The result as a pandas DataFrame, one row per measured cell."""
        raise NotSupportedError(f"{type(self).__name__} has no table view")

    def _repr_html_(self) -> str:

        head = f"<b>{html.escape(type(self).__name__)}</b><pre>{html.escape(self.summary())}</pre>"
        image = viz.plot_html(self) if self._plottable else ""
        return f'<div class="mechlin-result">{head}{image}</div>'

    # --- save and load --------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this result to ``path`` (a ``.pt`` file) atomically and return the path."""

        assert dataclasses.is_dataclass(self)
        data: dict[str, Any] = {
            f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
        }
        data[_KIND] = type(self).__name__
        path = Path(path)
        with atomic_write(path) as tmp:
            torch.save(data, tmp)
        return path

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a result written by ``save``."""
        data = torch.load(Path(path), weights_only=True)
        kind = data.pop(_KIND, None) if isinstance(data, dict) else None
        if kind != cls.__name__:
            raise ArgumentError(
                f"{path} holds a {kind or 'non-mechlin'} result, not a {cls.__name__}"
            )
        hints = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        data = {cls._renamed.get(k, k): v for k, v in data.items()}
        return cls(**{k: _restore(v) for k, v in data.items() if k in hints})


ResultIO = Result  # the name before the result protocol; kept, it costs nothing


def _plain(value: Any) -> Any:
    if isinstance(value, Result) and dataclasses.is_dataclass(value):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__result__": type(value).__name__, "fields": fields}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, tuple):
        return {"__tuple__": [_plain(v) for v in value]}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _restore(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__result__", "fields"}:
        cls = _REGISTRY[value["__result__"]]
        return cls(**{k: _restore(v) for k, v in value["fields"].items()})
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_restore(v) for v in value["__tuple__"])
        return {k: _restore(v) for k, v in value.items()}
    return value
