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
  ``weights_only=True`` (no code runs on load), checks the file holds that kind of result, that
  each field has its declared type, and calls ``_validate()``: float tensors are finite unless
  the field is listed in ``_nonfinite`` (NaN padding, "not measured"), token ids (the integers
  of every ``*_id`` / ``*_ids`` field) are non-negative and lie within the result's vocabulary
  size where it knows one (``_vocab_size``). Subclasses extend ``_validate`` for their own
  promises.

Every result class registers its name; two classes of one name would make saved files
ambiguous, so a duplicate raises at import.
"""

from __future__ import annotations

import dataclasses
import html
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from jaxtyping import AbstractArray

from mechlin import viz
from mechlin._store import atomic_write
from mechlin.errors import ArgumentError, DuplicateResultError, MechlinError, NotSupportedError

_KIND = "__mechlin_result__"
R = TypeVar("R", bound="Result")

_REGISTRY: dict[str, type[Result]] = {}

# Float-tensor fields that hold NaN or -inf by design, for result classes that do not declare
# ``_nonfinite`` themselves.
KNOWN_NONFINITE: dict[str, frozenset[str]] = {
    # -inf pads the choices an item lacks
    "ExpressionScores": frozenset({"option_loglik", "letter_logprob"}),
}


class Result:
    """Base of every result: ``summary``, ``plot``, ``_repr_html_``, ``to_frame``, save/load.

    Fields may themselves be results (a dissection holds its pieces); they are saved inline.
    """

    _plottable: ClassVar[bool] = True  # False for results without a figure (HTML view: summary)
    _renamed: ClassVar[dict[str, str]] = {}  # old field name -> new, read by ``load``
    # float-tensor fields that may hold NaN / inf by design (padding, "not measured"): ``load``
    # refuses non-finite values in every other float tensor (see ``_validate``)
    _nonfinite: ClassVar[frozenset[str]] = frozenset()

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
        """Read a result written by ``save``; a file that is not one, or whose values are
        tampered with (a wrong type, a NaN where the result promises finite numbers, a negative
        token id or one outside the recorded vocabulary), raises ``ArgumentError`` naming the
        file."""
        path = Path(path)
        if not path.is_file():
            raise ArgumentError(f"{path} does not exist (or is not a file)")
        try:
            data = torch.load(path, weights_only=True)
        except Exception as e:  # not a torch file, or a pickle that would run code
            raise ArgumentError(
                f"{path} is not a saved mechlin result (torch.load refused it: "
                f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
            ) from None
        kind = data.pop(_KIND, None) if isinstance(data, dict) else None
        if kind != cls.__name__:
            what = f"a {kind} result" if isinstance(kind, str) else _describe(data, whole_file=True)
            raise ArgumentError(f"{path} holds {what}, not a saved {cls.__name__}")
        data = {cls._renamed.get(k, k): v for k, v in data.items()}
        return _build(cls, data, f"{path}")

    # --- what a loaded result must hold ---------------------------------------------------

    def _validate(self) -> None:
        """Check the values a loaded file gave this result; raise ``ArgumentError`` if wrong.

        The default: every float tensor (also inside tuples and dicts) is finite unless its
        field is in ``_nonfinite``; every token id is non-negative and, where the result knows
        its vocabulary size (``_vocab_size``), below it. Token ids are the integers (plain ints
        and integer tensors, also inside tuples, lists and dicts) of the fields named ``*_id``
        or ``*_ids`` (``answer_id``, ``contrast_id``, ``pair_ids``, ``token_ids``); strings
        there are names, not token ids (``ExpressionScores.item_ids``), and are not checked.
        Subclasses extend it (call ``super()._validate()``).
        """
        allowed = self._nonfinite | KNOWN_NONFINITE.get(type(self).__name__, frozenset())
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in allowed:
                continue
            for where, t in _tensors(getattr(self, f.name), f.name):
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    bad = int((~torch.isfinite(t)).sum())
                    raise ArgumentError(
                        f"{where} holds {bad} NaN/inf value(s); a {type(self).__name__} "
                        "holds finite numbers there (the file was changed or corrupted)"
                    )
        d_vocab = self._vocab_size()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.name.endswith(("_id", "_ids")):
                continue
            for where, lo, hi, what in _token_ids(getattr(self, f.name), f.name):
                if d_vocab is not None and (lo < 0 or hi >= d_vocab):
                    raise ArgumentError(
                        f"{where} holds {what}, outside the model's vocabulary [0, {d_vocab}) "
                        "recorded in the result (the file was changed or corrupted)"
                    )
                if lo < 0:
                    raise ArgumentError(
                        f"{where} holds {what}; token ids are never negative (the file was "
                        "changed or corrupted)"
                    )

    def _vocab_size(self) -> int | None:
        """The vocabulary size the token ids are checked against: the ``d_vocab`` field where
        the result records one. Results that know it otherwise override this (``Separability``:
        its per-token score rows); with ``None`` only negative token ids are refused
        (``CausalTrace.answer_id`` and ``KnockoutCurve.answer_id`` record no vocabulary)."""
        d_vocab = getattr(self, "d_vocab", None)
        return d_vocab if isinstance(d_vocab, int) and not isinstance(d_vocab, bool) else None


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


def _restore(value: Any, where: str) -> Any:
    if isinstance(value, dict) and set(value) == {"__result__", "fields"}:
        name, fields = value["__result__"], value["fields"]
        if name not in _REGISTRY or not isinstance(fields, dict):
            raise ArgumentError(f"{where} holds an unknown result kind {name!r}")
        cls = _REGISTRY[name]
        renamed = {str(cls._renamed.get(k, k)): v for k, v in fields.items()}
        return _build(cls, renamed, where)
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            items = value["__tuple__"]
            if not isinstance(items, list):
                raise ArgumentError(f"{where} holds a malformed tuple ({_describe(items)})")
            return tuple(_restore(v, f"{where}[{i}]") for i, v in enumerate(items))
        return {k: _restore(v, f"{where}[{k!r}]") for k, v in value.items()}
    return value


def _build(cls: type[R], data: dict[str, Any], where: str) -> R:
    """``cls(**data)`` from a loaded file: field types checked first, ``_validate`` after."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = _field_types(cls)
    missing = [
        name
        for name, f in fields.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ArgumentError(f"{where}: the saved {cls.__name__} lacks the field(s) {missing}")
    values = {}
    for name, raw in data.items():
        if name not in fields:  # a field a newer or older version wrote: ignored
            continue
        value = _restore(raw, f"{where}: {cls.__name__}.{name}")
        if name in hints and not _conforms(value, hints[name]):
            raise ArgumentError(
                f"{where}: {cls.__name__}.{name} holds {_describe(value)}, not "
                f"{_annotation_text(cls, name)}"
            )
        values[name] = value
    try:
        result = cls(**values)
    except MechlinError as e:
        raise ArgumentError(
            f"{where}: the saved values do not make a {cls.__name__}: {e}"
        ) from None
    except Exception as e:  # a __post_init__ tripping over a tampered value
        raise ArgumentError(
            f"{where}: the saved values do not make a {cls.__name__}: {type(e).__name__}: {e}"
        ) from None
    try:
        result._validate()
    except MechlinError as e:
        raise ArgumentError(f"{where}: {e}") from None
    return result


def _tensors(value: Any, where: str) -> list[tuple[str, torch.Tensor]]:
    """Every tensor in a field value (inside tuples, lists and dicts; not inside results)."""
    if isinstance(value, torch.Tensor):
        return [(where, value)]
    if isinstance(value, tuple | list):
        return [t for i, v in enumerate(value) for t in _tensors(v, f"{where}[{i}]")]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _tensors(v, f"{where}[{k!r}]")]
    return []


def _token_ids(value: Any, where: str) -> list[tuple[str, int, int, str]]:
    """(where, smallest, largest, how to say it) of the integers in a token-id field value: an
    int, an integer tensor, or those inside tuples, lists and dicts (bools and floats are not
    token ids; a float tensor there is left to the field's type check)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [(where, value, value, f"token id {value}")]
    if isinstance(value, torch.Tensor):
        if not value.numel() or value.is_floating_point() or value.dtype == torch.bool:
            return []
        lo, hi = int(value.min()), int(value.max())
        return [(where, lo, hi, f"token ids {lo}..{hi}")]
    if isinstance(value, tuple | list):
        return [t for i, v in enumerate(value) for t in _token_ids(v, f"{where}[{i}]")]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _token_ids(v, f"{where}[{k!r}]")]
    return []


def _describe(value: Any, *, whole_file: bool = False) -> str:
    """What a loaded value is, in a few words (for error messages)."""
    tail = ", a non-mechlin object" if whole_file else ""
    if isinstance(value, torch.Tensor):
        what = "a bare tensor" if whole_file else "a tensor"
        return f"{what} (shape {list(value.shape)}, {value.dtype}){tail}"
    if isinstance(value, list | tuple):
        kind = "list" if isinstance(value, list) else "tuple"
        return f"a {kind} of {len(value)} item(s){tail}"
    if isinstance(value, dict):
        keys = sorted(map(str, value))[:5]
        return f"a dict with keys {keys}{tail}"
    return f"a {type(value).__name__} ({str(value)[:40]!r}){tail}"


_TYPE_CACHE: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    """Each field's annotation, evaluated in its module (fields that do not evaluate: left out)."""
    if cls not in _TYPE_CACHE:
        import sys  # noqa: PLC0415

        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            scope = dict(vars(sys.modules.get(klass.__module__, object())))
            for name, text in vars(klass).get("__annotations__", {}).items():
                try:
                    out[name] = eval(text, scope) if isinstance(text, str) else text
                except Exception:
                    out.pop(name, None)
        _TYPE_CACHE[cls] = out
    return _TYPE_CACHE[cls]


def _annotation_text(cls: type, name: str) -> str:
    for klass in cls.__mro__:
        text = vars(klass).get("__annotations__", {}).get(name)
        if text is not None:
            return str(text)
    return "the declared type"


def _array_fits(value: torch.Tensor, annotation: Any) -> bool:
    """dtype kind and rank of a jaxtyping annotation, without binding dimension names (a
    loaded result's fields, and the results nested in it, reuse names with other sizes)."""
    dtype = str(value.dtype).removeprefix("torch.")
    dtypes = getattr(annotation, "dtypes", None)
    if dtypes is not None and dtype not in dtypes:
        return False
    dims = str(getattr(annotation, "dim_str", "")).split()
    variadic = [d for d in dims if d.startswith(("*", "#*")) or d == "..."]
    fixed = len(dims) - len(variadic)
    return value.ndim >= fixed if variadic else value.ndim == fixed


def _conforms(value: Any, annotation: Any) -> bool:
    """Whether a loaded value fits a field annotation (coarsely: kinds, dtypes, ranks)."""
    if annotation is Any or annotation is None or annotation is type(None):
        return annotation is Any or value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_conforms(value, a) for a in args)
    if origin is typing.Annotated:
        return _conforms(value, args[0])
    if origin is typing.Literal:
        return value in args
    if origin is ClassVar:
        return True
    if isinstance(annotation, type) and issubclass(annotation, AbstractArray):
        return isinstance(value, torch.Tensor) and _array_fits(value, annotation)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        if not args or args == ((),):
            return True
        return len(value) == len(args) and all(
            _conforms(v, a) for v, a in zip(value, args, strict=True)
        )
    if origin in (list, Sequence):
        return isinstance(value, list | tuple) and (
            not args or all(_conforms(v, args[0]) for v in value)
        )
    if origin in (dict, Mapping):
        return isinstance(value, dict) and (
            len(args) != 2
            or all(_conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items())
        )
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # a form not interpreted here (a TypeVar, a Protocol): the class checks it
