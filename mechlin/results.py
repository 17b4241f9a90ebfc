"""What every analysis result shares: saving, loading, and a notebook view.

Results are frozen dataclasses of tensors, numbers, strings and tuples of those. ``save``
writes them with ``torch.save``; ``load`` reads them back with ``weights_only=True`` (no
arbitrary code runs on load) and checks that the file holds that kind of result.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

_KIND = "__mechlin_result__"
R = TypeVar("R", bound="ResultIO")


_REGISTRY: dict[str, type[ResultIO]] = {}


class ResultIO:
    """Mixin for frozen dataclasses: ``save(path)``, ``load(path)`` and a default HTML view.

    Fields may themselves be results (a dissection holds its pieces); they are saved inline.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this result to ``path`` (a ``.pt`` file) and return the path."""
        assert dataclasses.is_dataclass(self)
        data: dict[str, Any] = {
            f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
        }
        data[_KIND] = type(self).__name__
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(data, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a result written by ``save``."""
        data = torch.load(Path(path), weights_only=True)
        kind = data.pop(_KIND, None)
        if kind != cls.__name__:
            raise ValueError(f"{path} holds a {kind or 'non-mechlin'} result, not a {cls.__name__}")
        hints = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: _restore(v) for k, v in data.items() if k in hints})

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"


def _plain(value: Any) -> Any:
    if isinstance(value, ResultIO) and dataclasses.is_dataclass(value):
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


def plot_html(result: Any) -> str:
    """``result.plot()`` as an inline PNG, the figure closed afterwards."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig = result.plot()
    try:
        return figure_to_html(fig)
    finally:
        plt.close(fig)


def figure_to_html(fig: Any) -> str:
    """Embed a matplotlib figure in HTML as an inline PNG (no external files)."""
    import base64  # noqa: PLC0415
    import io  # noqa: PLC0415

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}"/>'
