"""One argument check at the public boundary: ``@checked`` validates a call against its signature.

Every public function of mechlin is decorated (``tests/test_checks.py`` fails for one that is
not), so a new function gets the checks by default. At entry, before any work, ``checked``:

* binds the call to the signature (a missing or unknown argument is an ``ArgumentTypeError``
  naming the function and the parameters it takes);
* enforces ``Literal`` options, also inside unions (``Literal["3sigma"] | float``): an unknown
  string is an ``ArgumentError`` listing the allowed values;
* refuses a bare string where a sequence or iterable of items is annotated (``"hello"`` would
  otherwise be read character by character): ``ArgumentTypeError``;
* applies the rules of ``RULES`` by parameter name, the same names meaning the same things across
  mechlin (``n_samples``, ``window``, ``batch_size``, ``top_k``, ``test_fraction``, ...): counts
  must be positive, fractions lie in their interval, floats are finite; ``layers`` and ``ks``
  hold no duplicates and no negative grid points where they are counts.

Checks that need the model (a layer or position within range, the context length) stay in the
functions and in ``mechlin.sites`` / ``mechlin.tokens``; they raise the same error classes. Every
message names the function, the argument, the value and what is allowed.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args, get_origin

from mechlin.errors import ArgumentError, ArgumentTypeError, StoreMismatchError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Rule:
    """What a parameter of this name may hold (numbers only; other values pass)."""

    low: float | int | None = None  # smallest allowed value
    high: float | int | None = None  # largest allowed value
    low_open: bool = False  # the bound itself is excluded
    high_open: bool = False
    integer: bool = False
    what: str = ""

    def describe(self) -> str:
        if self.what:
            return self.what
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {left}{lo}, {hi}{right}"

    def allows(self, value: float | int) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )


_COUNT = Rule(low=1, integer=True, what="a positive integer (>= 1)")
NONNEG = Rule(low=0, integer=True, what="a non-negative integer")
_POSITIVE = Rule(low=0, low_open=True, what="a positive finite number")
_FRACTION = Rule(low=0, high=1, low_open=True, high_open=True, what="a fraction in (0, 1)")

RULES: dict[str, Rule] = {
    **{
        name: _COUNT
        for name in (
            "n_samples",
            "window",
            "batch_size",
            "chunk_size",
            "chunk",
            "top_k",
            "keep",
            "memory_budget",
            "steps",
            "n_random",
            "n_per_class",
            "n_per_language",
            "max_tokens",
            "record_every",
            "n_features",
            "d_hidden",
            "n_concepts",
            "d",
            "n_seeds",
            "n_instances",
            "n_candidates",
            "context_words",
            "n_shuffles",
            "n_permutations",
            "n_bootstrap",
            "n_rotations",
            "max_iter",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "d_model",
            "d_mlp",
        )
    },
    "k": Rule(low=1, integer=True, what="a positive number of neurons (>= 1)"),
    "seed": NONNEG,
    "occurrence": Rule(integer=True),
    "test_fraction": _FRACTION,
    "quantile": _FRACTION,
    "edge_prob": Rule(low=0, high=1, what="a probability in [0, 1]"),
    "sparsity": Rule(low=0, high=1, high_open=True, what="a probability in [0, 1)"),
    "lr": _POSITIVE,
    "temperature": _POSITIVE,
    "C": _POSITIVE,
    "weight_decay": Rule(low=0, what="a non-negative number"),
    "noise": Rule(low=0, low_open=True, what='"3sigma" or a positive finite noise std'),
    "threshold": Rule(low=0, what="a non-negative number"),
    "alpha": Rule(),
}
# parameters holding grid points or layer indices: no duplicates; counts must be >= 1
_NO_DUPLICATES = ("layers", "ks", "alphas", "kinds", "methods", "blocks", "positions")
_COUNT_ITEMS = ("ks",)
# parameters holding grid points, layers or positions: every number finite (no NaN grid point)
_FINITE_ITEMS = ("alphas", "sparsities", "ks", "layers", "positions", "shots", "pass_k")
# parameters naming a directory a store is written to: an existing file there is refused
_DIRECTORIES = ("out",)


@typing.overload
def checked(fn: F, *, rules: dict[str, Rule] | None = None) -> F: ...
@typing.overload
def checked(fn: None = None, *, rules: dict[str, Rule] | None = None) -> Callable[[F], F]: ...
def checked(fn: F | None = None, *, rules: dict[str, Rule] | None = None) -> Any:
    """Validate every call of ``fn`` against its signature at entry (see the module docstring).

    ``@checked(rules={"n_samples": NONNEG})`` overrides a name rule for one function (there,
    ``n_samples=0`` means "no sampling").
    """
    if fn is None:
        return functools.partial(checked, rules=rules)
    signature = inspect.signature(fn)
    name = fn.__qualname__
    hints: dict[str, Any] | None = None
    own = {**RULES, **(rules or {})}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal hints
        if hints is None:
            hints = _hints(fn, signature)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise ArgumentTypeError(
                f"{name}(): {e}. It takes: {', '.join(signature.parameters)}"
            ) from None
        for param, value in bound.arguments.items():
            kind = signature.parameters[param].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            check_argument(name, param, value, hints.get(param), rules=own)
        return fn(*args, **kwargs)

    wrapper.__mechlin_checked__ = True  # type: ignore[attr-defined]
    return typing.cast(F, wrapper)


def _hints(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    """Each parameter's annotation, evaluated where possible (names only a type checker sees,
    under ``TYPE_CHECKING``, leave that parameter to the name rules)."""
    target = inspect.unwrap(fn)
    scope = dict(getattr(target, "__globals__", {}))
    out: dict[str, Any] = {}
    for param in signature.parameters.values():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, scope)  # the module's own annotation text
            except Exception:
                continue
        out[param.name] = annotation
    return out


def check_argument(
    function: str,
    name: str,
    value: Any,
    annotation: Any = None,
    *,
    rules: Mapping[str, Rule] = RULES,
) -> None:
    """Raise a ``MechlinError`` if ``value`` is not allowed for parameter ``name``."""
    if annotation is not None:
        _check_literals(function, name, value, annotation)
        _check_not_a_bare_string(function, name, value, annotation)
        _check_string(function, name, value, annotation)
        _check_literal_items(function, name, value, annotation)
        _check_mapping(function, name, value, annotation)
    if name == "facts" and _is_sequence(value):
        _check_facts(function, value)
    if name in _DIRECTORIES and isinstance(value, str | os.PathLike) and os.path.isfile(value):
        raise StoreMismatchError(
            f"{function}(): out={os.fspath(value)!r} is a file, not a directory: pass a "
            "directory for the store"
        )
    if name in _FINITE_ITEMS:
        items = value.flatten().tolist() if _is_tensor(value) else value
        if _is_sequence(items):
            bad = [i for i in items if _is_number(i) and not math.isfinite(i)]
            if bad:
                raise ArgumentError(f"{function}(): {name} holds {bad}: every value must be finite")
    rule = rules.get(name)
    if rule is not None and _is_number(value):
        if rule.integer and isinstance(value, float) and not value.is_integer():
            raise ArgumentError(f"{function}(): {name}={value!r} must be {rule.describe()}")
        if not rule.allows(float(value)):
            raise ArgumentError(f"{function}(): {name}={value!r} must be {rule.describe()}")
    elif _is_number(value) and isinstance(value, float) and not math.isfinite(value):
        raise ArgumentError(f"{function}(): {name}={value!r} must be a finite number")
    if name in _NO_DUPLICATES and _is_sequence(value):
        items = list(value)
        hashable = [i for i in items if isinstance(i, int | float | str)]
        if len(set(hashable)) != len(hashable):
            dup = sorted({i for i in hashable if hashable.count(i) > 1}, key=str)
            raise ArgumentError(f"{function}(): {name} holds duplicates {dup}: give each once")
        if name in _COUNT_ITEMS:
            bad = [i for i in items if not _is_number(i) or i < 1]
            if bad:
                raise ArgumentError(f"{function}(): {name} must hold positive integers, got {bad}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _flatten(annotation: Any) -> list[Any]:
    """The members of a union (Optional included), Annotated unwrapped."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in get_args(annotation) for m in _flatten(a)]
    return [annotation]


def _check_literals(function: str, name: str, value: Any, annotation: Any) -> None:
    members = _flatten(annotation)
    literals = [v for m in members if get_origin(m) is typing.Literal for v in get_args(m)]
    if not literals or value in literals:
        return
    others = [m for m in members if get_origin(m) is not typing.Literal]
    takes_strings = any(m is str for m in others)
    if (not isinstance(value, str) or takes_strings) and any(_instance(value, m) for m in others):
        return
    allowed = ", ".join(repr(v) for v in literals)
    extra = [_type_name(m) for m in others]
    tail = f", or {' or '.join(extra)}" if extra else ""
    raise ArgumentError(
        f"{function}(): {name}={value!r} is not allowed; use one of {allowed}{tail}"
    )


def _instance(value: Any, annotation: Any) -> bool:
    if annotation is Any or annotation is typing.Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = get_origin(annotation) or annotation
    if origin is float:
        return _is_number(value)
    if isinstance(origin, type):
        try:
            return isinstance(value, origin)
        except TypeError:
            return True
    return True  # a form this check does not interpret: leave it to the function


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation) or annotation
    return getattr(origin, "__name__", str(annotation))


def _check_not_a_bare_string(function: str, name: str, value: Any, annotation: Any) -> None:
    if not isinstance(value, str):
        return
    members = _flatten(annotation)
    if any(m is str or m is Any or get_origin(m) is typing.Literal for m in members):
        return
    containers = [m for m in members if get_origin(m) is not None]
    if not containers:
        return
    for m in containers:
        origin = get_origin(m)
        if (
            isinstance(origin, type)
            and issubclass(origin, Iterable)
            and not issubclass(origin, Mapping)
        ):
            raise ArgumentTypeError(
                f"{function}(): {name} takes a list of items, not one string ({value!r} would be "
                f"read character by character): pass [{value!r}]"
            )


def _is_tensor(value: Any) -> bool:
    return type(value).__name__ in ("Tensor", "Parameter") and hasattr(value, "flatten")


def _check_string(function: str, name: str, value: Any, annotation: Any) -> None:
    """A parameter annotated ``str`` (or ``str | None``) given another type: a clear error
    instead of an ``AttributeError`` from deep inside (``5.strip()``) or the tokenizer."""
    members = _flatten(annotation)
    if str not in members or any(m not in (str, type(None), None) for m in members):
        return
    if isinstance(value, str) or (value is None and len(members) > 1):
        return
    raise ArgumentTypeError(
        f"{function}(): {name}={value!r} must be a string, not {type(value).__name__}"
    )


def _literal_values(annotation: Any) -> list[Any]:
    members = _flatten(annotation)
    if not members or any(get_origin(m) is not typing.Literal for m in members):
        return []
    return [v for m in members for v in get_args(m)]


def _item_annotation(member: Any) -> Any:
    """The item type of ``Sequence[X]`` / ``tuple[X, ...]`` / ``list[X]`` (else ``None``)."""
    origin, args = get_origin(member), get_args(member)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    if origin in (list, Sequence, Iterable, set, frozenset) or (
        isinstance(origin, type) and origin is not tuple and _is_abc_sequence(origin)
    ):
        return args[0] if args else None
    return None


def _is_abc_sequence(origin: type) -> bool:
    import collections.abc as abc  # noqa: PLC0415

    return issubclass(origin, abc.Iterable) and not issubclass(origin, abc.Mapping | str)


def _check_literal_items(function: str, name: str, value: Any, annotation: Any) -> None:
    """Items of ``Sequence[Literal[...]]`` (``kinds``, ``blocks``, ``methods``) are checked
    like a single option."""
    if not _is_sequence(value):
        return
    for member in _flatten(annotation):
        allowed = _literal_values(_item_annotation(member))
        if not allowed:
            continue
        for item in value:
            if isinstance(item, str | int | float) and item not in allowed:
                raise ArgumentError(
                    f"{function}(): {name} holds {item!r}, which is not allowed; use one of "
                    f"{', '.join(repr(v) for v in allowed)}"
                )
        return


def _check_mapping(function: str, name: str, value: Any, annotation: Any) -> None:
    """A parameter annotated only as a mapping must get one; its keys and values are checked
    against the annotation where it is plain (str, int, float, tuples, sequences of those)."""
    members = [m for m in _flatten(annotation) if m not in (None, type(None))]
    maps = [m for m in members if (get_origin(m) or m) in (dict, Mapping)]
    if not maps:
        return
    if not isinstance(value, Mapping):
        if len(maps) == len(members) and value is not None:
            raise ArgumentTypeError(
                f"{function}(): {name} must be a mapping ({_show(maps[0])}), not "
                f"{type(value).__name__} {_short(value)}"
            )
        return
    args = get_args(maps[0])
    if len(maps) != 1 or len(args) != 2:
        return
    key_type, value_type = args
    for k, v in value.items():
        if not _fits(k, key_type):
            raise ArgumentTypeError(
                f"{function}(): {name} has the key {k!r}; keys must be {_show(key_type)}"
            )
        if not _fits(v, value_type):
            raise ArgumentTypeError(
                f"{function}(): {name}[{k!r}] = {_short(v)} must be {_show(value_type)}"
            )


def _fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a plain annotation; forms not interpreted here fit."""
    if annotation is Any or annotation is typing.Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, a) for a in args)
    if origin is typing.Annotated:
        return _fits(value, args[0])
    if origin is typing.Literal:
        return value in args
    if annotation is str:
        return isinstance(value, str)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return _is_number(value)
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(args) == 0 or (
            len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        )
    item = _item_annotation(annotation)
    if item is not None or origin in (list, Sequence, Iterable):
        if isinstance(value, str) or not isinstance(value, Iterable):
            return False
        if isinstance(value, list | tuple) and item is not None:
            return all(_fits(v, item) for v in value)
        return True
    return True


def _show(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return text.replace("<class '", "").replace("'>", "")


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _check_facts(function: str, facts: Any) -> None:
    """Every fact is a ``Fact``, a record with string ``prompt`` and ``subject`` (and
    ``attribute``, optional), or a (prompt, subject[, attribute]) tuple of strings."""
    for i, fact in enumerate(facts):
        if hasattr(fact, "prompt") and hasattr(fact, "subject"):
            continue
        if isinstance(fact, Mapping):
            missing = [k for k in ("prompt", "subject") if k not in fact]
            wrong = [
                k
                for k in ("prompt", "subject", "attribute")
                if k in fact and not isinstance(fact[k], str)
            ]
            if missing or wrong:
                problem = f"lacks {missing}" if missing else f"has non-string {wrong}"
                raise ArgumentTypeError(
                    f"{function}(): fact {i} {problem}: a record needs string 'prompt' and "
                    "'subject', and may have 'attribute' (none: the model's own answer)"
                )
            continue
        if (
            isinstance(fact, tuple | list)
            and len(fact) in (2, 3)
            and all(isinstance(x, str) for x in fact)
        ):
            continue
        raise ArgumentTypeError(
            f"{function}(): fact {i} is {_short(fact)}; a fact is a Fact, a record with "
            "'prompt', 'subject', 'attribute', or a (prompt, subject[, attribute]) tuple of strings"
        )
