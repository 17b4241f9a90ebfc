"""The one argument check and the one result protocol, at the public boundary of the package."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Literal

import pytest
import torch

import mechlin
from mechlin._checks import checked
from mechlin.errors import ArgumentError, ArgumentTypeError, MechlinError
from mechlin.results import Result

AREAS = ("mechlin", "mechlin.recall", "mechlin.neurons", "mechlin.directions", "mechlin.datasets")


def _public_functions() -> list[tuple[str, object]]:
    out = {}
    for area in (*AREAS, "mechlin.origins", "mechlin.cognition"):
        try:
            module = importlib.import_module(area)
        except ImportError:
            continue
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not inspect.isclass(obj):
                out[f"{obj.__module__}.{name}"] = obj
    return sorted(out.items())


@pytest.mark.parametrize(("name", "fn"), _public_functions(), ids=lambda x: str(x)[:60])
def test_every_public_function_checks_its_arguments(name: str, fn: object) -> None:
    assert getattr(fn, "__mechlin_checked__", False), f"{name} is not decorated with @checked"


def test_every_error_class_is_a_mechlin_error_and_exported() -> None:
    from mechlin import errors

    classes = [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, Exception)]
    for cls in classes:
        if cls.__name__.startswith("_"):
            continue
        assert issubclass(cls, MechlinError), cls
        assert cls.__name__ in errors.__all__ and hasattr(mechlin, cls.__name__), cls
    assert issubclass(mechlin.ArgumentError, ValueError)
    assert issubclass(mechlin.ArgumentTypeError, TypeError)
    assert issubclass(mechlin.OutOfRangeError, IndexError)


def test_checked_reads_literals_ranges_and_bare_strings() -> None:
    @checked
    def f(
        texts: list[str],
        *,
        kind: Literal["a", "b"] = "a",
        noise: Literal["3sigma"] | float = "3sigma",
        window: int = 3,
        test_fraction: float = 0.3,
    ) -> int:
        return len(texts)

    assert f(["x"], kind="b", noise=2.0, window=1, test_fraction=0.5) == 1
    for kwargs, error, fragment in [
        ({"kind": "c"}, ArgumentError, "kind='c' is not allowed; use one of 'a', 'b'"),
        ({"noise": "loud"}, ArgumentError, "noise='loud' is not allowed"),
        ({"noise": float("inf")}, ArgumentError, "positive finite"),
        ({"window": 0}, ArgumentError, "window=0 must be a positive integer"),
        ({"window": 2.5}, ArgumentError, "window=2.5 must be"),
        ({"test_fraction": 1.0}, ArgumentError, r"a fraction in \(0, 1\)"),
        ({"bogus": 1}, ArgumentTypeError, "unexpected keyword argument 'bogus'"),
    ]:
        with pytest.raises(error, match=fragment):
            f(["x"], **kwargs)
    with pytest.raises(ArgumentTypeError, match="not one string"):
        f("hello")


def test_result_protocol_defaults_and_registry(tmp_path: Path) -> None:
    @dataclasses.dataclass(frozen=True)
    class ProtocolProbe(Result):
        value: float
        curve: torch.Tensor

        def plot(self, ax=None):
            from mechlin import viz

            fig, ax = viz.axes(ax, figsize=(2, 2))
            ax.plot(self.curve.numpy())
            return fig

    r = ProtocolProbe(0.5, torch.arange(3.0))
    assert "value=0.5" in r.summary()
    page = r._repr_html_()
    assert "ProtocolProbe" in page and "<img" in page and "value=0.5" in page
    again = ProtocolProbe.load(r.save(tmp_path / "r.pt"))
    assert again.value == 0.5 and torch.equal(again.curve, r.curve)
    torch.save(torch.zeros(3), tmp_path / "bare.pt")
    with pytest.raises(ArgumentError, match="non-mechlin"):
        ProtocolProbe.load(tmp_path / "bare.pt")
    with pytest.raises(TypeError, match="two result classes are named 'ProtocolProbe'"):

        @dataclasses.dataclass(frozen=True)
        class ProtocolProbe(Result):  # type: ignore[no-redef]
            value: float


def test_renamed_fields_keep_their_old_names(tiny, tmp_path: Path) -> None:
    trace = mechlin.causal_trace(
        tiny, "The Eiffel Tower is located in", "Eiffel Tower", n_samples=2, noise=1.0
    )
    assert trace.p_clean == trace.clean_score and trace.p_corrupt == trace.corrupt_score
    data = torch.load(trace.save(tmp_path / "t.pt"), weights_only=True)
    data["p_clean"], data["p_corrupt"] = data.pop("clean_score"), data.pop("corrupt_score")
    torch.save(data, tmp_path / "old.pt")  # a file written before the rename
    old = mechlin.CausalTrace.load(tmp_path / "old.pt")
    assert old.clean_score == trace.clean_score
