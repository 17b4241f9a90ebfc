"""Figures and HTML views: the one module that imports pyplot, and views that open offline.

``axes(ax, figsize=...)`` and ``figure(nrows, ncols, fig=...)`` are how every result's ``plot``
gets its figure (a new one, or the caller's); ``plot_html`` / ``figure_to_html`` embed a figure
in HTML as an inline PNG. ``write_report`` writes one standalone page.

circuitsvis renders by importing its JavaScript from a CDN unless told otherwise, which shows a
blank page with no network. ``circuitsvis_html`` always uses the bundled script that ships in
the circuitsvis wheel (``dist/cdn/iife.js``, ~1.3 MB), so a saved file works anywhere.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechlin._store import atomic_write
from mechlin._types import Model
from mechlin.errors import ArgumentError, ArgumentTypeError
from mechlin.sites import check_layer, hook_name

Size = tuple[float | int, float | int]  # (width, height) in inches


def _pyplot() -> Any:
    import matplotlib.pyplot as plt  # noqa: PLC0415  (pyplot is slow to import: only when drawn)

    return plt


def axes(ax: Any = None, *, figsize: Size = (6.0, 4.0)) -> tuple[Any, Any]:
    """(figure, axes) to draw into: ``ax`` and its figure, or a new figure of ``figsize``."""
    if ax is not None:
        return ax.figure, ax
    fig, new = _pyplot().subplots(figsize=figsize)
    return fig, new


def figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    fig: Any = None,
    figsize: Size = (10.0, 4.0),
    **kwargs: Any,
) -> tuple[Any, Any]:
    """(figure, array of axes) for a multi-panel plot: a new figure, or panels on ``fig``."""
    if fig is None:
        return _pyplot().subplots(nrows, ncols, figsize=figsize, squeeze=False, **kwargs)
    fig.clear()
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def close(fig: Any) -> None:
    """Close a figure made here (frees its memory; nothing is shown)."""
    _pyplot().close(fig)


def outline_cells(ax: Any, cells: Sequence[tuple[int, int]], color: str = "black") -> None:
    """Outline unit cells (x, y) of a ``pcolor`` heatmap on ``ax``."""
    from matplotlib.patches import Rectangle  # noqa: PLC0415  (matplotlib loads with pyplot)

    for x, y in cells:
        ax.add_patch(Rectangle((x, y), 1, 1, fill=False, edgecolor=color, lw=0.8))


def figure_to_html(fig: Any) -> str:
    """Embed a matplotlib figure in HTML as an inline PNG (no external files)."""
    import base64  # noqa: PLC0415
    import io  # noqa: PLC0415

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}"/>'


def plot_html(result: Any) -> str:
    """``result.plot()`` as an inline PNG, the figure closed afterwards."""
    fig = result.plot()
    try:
        return figure_to_html(fig)
    finally:
        close(fig)


def circuitsvis_html(rendered: Any) -> str:
    """The self-contained HTML of a circuitsvis object (script inlined, no CDN)."""
    local = getattr(rendered, "local_src", None)
    if not isinstance(local, str):
        raise ArgumentTypeError(
            f"expected a circuitsvis RenderedHTML, got {type(rendered).__name__}"
        )
    return _script_safe(local)


def _script_safe(page: str) -> str:
    """circuitsvis writes its data (tokens: user text) as JSON inside ``<script>``, where a
    ``</script>`` in a token would end the script and the rest would run as page markup. The
    data's ``<``, ``>`` and ``&`` (only ever inside its JSON strings) become ``\\u003c`` etc., the
    same string to JavaScript (as Django's ``json_script`` does)."""
    start = page.rfind("CircuitsVis.render(")
    end = page.rfind("</script>")
    if start < 0 or end < start:
        return page
    data = page[start:end]
    for char, code in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        data = data.replace(char, code)
    return page[:start] + data + page[end:]


@torch.no_grad()
def attention_pattern_html(
    model: Model, prompt: str, layer: int, *, heads: Sequence[int] | None = None
) -> str:
    """circuitsvis view of the attention patterns of ``heads`` (default: all) in ``layer``."""
    import circuitsvis as cv  # noqa: PLC0415

    layer = check_layer(model, layer)
    name = hook_name(model, "attn_pattern", layer)
    tokens = model.to_tokens(prompt)
    _, cache = model.run_with_cache(tokens, names_filter=[name])
    pattern = cache[name][0]  # (head, query_pos, key_pos)
    heads = list(range(pattern.shape[0])) if heads is None else list(heads)
    rendered = cv.attention.attention_heads(
        attention=pattern[heads].float().cpu(),
        tokens=model.to_str_tokens(tokens[0]),
        attention_head_names=[f"L{layer}H{h}" for h in heads],
    )
    return circuitsvis_html(rendered)


_REPORT_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
  line-height:1.4;overflow-wrap:break-word}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em}
section{margin-bottom:2.5em}
img{max-width:100%;height:auto}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:.6em;font-size:.85em}
table{border-collapse:collapse;display:block;max-width:100%;overflow-x:auto;font-size:.85em;
  margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;
  max-width:32em;overflow-wrap:break-word}
th{overflow-wrap:anywhere;min-width:3em}td{min-width:2em}
nav.contents{background:#f6f6f6;padding:.4em 1em;margin-bottom:2em}
nav.contents ol{margin:.3em 0;padding-left:1.5em}
"""


def write_report(
    path: str | os.PathLike[str], title: str, sections: Sequence[tuple[str, str]]
) -> Path:
    """Write one standalone HTML page: ``sections`` are (heading, html body) pairs.

    The page's CSS keeps tables and figures within its width (wide tables scroll), wraps long
    lines, and a page of more than three sections starts with a list of contents.
    """
    ids = [f"s{i + 1}" for i in range(len(sections))]
    body = "\n".join(
        f'<section id="{sid}"><h2>{html.escape(head)}</h2>\n{content}\n</section>'
        for sid, (head, content) in zip(ids, sections, strict=True)
    )
    contents = ""
    if len(sections) > 3:
        items = "".join(
            f'<li><a href="#{sid}">{html.escape(head)}</a></li>'
            for sid, (head, _) in zip(ids, sections, strict=True)
        )
        contents = f'<nav class="contents"><b>Contents</b><ol>{items}</ol></nav>'
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_REPORT_CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
{contents}
{body}
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


@torch.no_grad()
def head_patterns_html(model: Model, prompt: str, heads: Sequence[tuple[int, int]]) -> str:
    """circuitsvis view of the attention patterns of (layer, head) pairs from any layers."""
    import circuitsvis as cv  # noqa: PLC0415

    if not heads:
        raise ArgumentError("no heads given: pass (layer, head) pairs")
    names = sorted({hook_name(model, "attn_pattern", layer) for layer, _ in heads})
    tokens = model.to_tokens(prompt)
    _, cache = model.run_with_cache(tokens, names_filter=names)
    patterns = torch.stack(
        [cache[hook_name(model, "attn_pattern", layer)][0, head] for layer, head in heads]
    )
    rendered = cv.attention.attention_heads(
        attention=patterns.float().cpu(),
        tokens=model.to_str_tokens(tokens[0]),
        attention_head_names=[f"L{layer}H{head}" for layer, head in heads],
    )
    return circuitsvis_html(rendered)


def gram_heatmap(
    gram: Tensor, names: Sequence[str], *, title: str = "", ax: Any = None, vmax: float = 1.0
) -> Any:
    """|gram| as a heatmap with concept names on both axes; returns the figure."""
    n = len(names)
    fig, ax = axes(ax, figsize=(0.25 * n + 2.5, 0.25 * n + 2))
    img = ax.imshow(gram.abs().float().numpy(), cmap="viridis", vmin=0, vmax=vmax)
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_yticks(range(n))
    ax.set_yticklabels(names, fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.colorbar(img, ax=ax, fraction=0.046)
    return fig
