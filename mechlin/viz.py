"""HTML views that open offline: circuitsvis views with their script inlined, and reports.

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

from mechlin.sites import check_layer, hook_name


def circuitsvis_html(rendered: Any) -> str:
    """The self-contained HTML of a circuitsvis object (script inlined, no CDN)."""
    local = getattr(rendered, "local_src", None)
    if not isinstance(local, str):
        raise TypeError(f"expected a circuitsvis RenderedHTML, got {type(rendered).__name__}")
    return local


@torch.no_grad()
def attention_pattern_html(
    model: Any, prompt: str, layer: int, *, heads: Sequence[int] | None = None
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


def write_report(
    path: str | os.PathLike[str], title: str, sections: Sequence[tuple[str, str]]
) -> Path:
    """Write one standalone HTML page: ``sections`` are (heading, html body) pairs."""
    body = "\n".join(
        f"<section><h2>{html.escape(head)}</h2>\n{content}\n</section>"
        for head, content in sections
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
section{{margin-bottom:2.5em}}</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


@torch.no_grad()
def head_patterns_html(model: Any, prompt: str, heads: Sequence[tuple[int, int]]) -> str:
    """circuitsvis view of the attention patterns of (layer, head) pairs from any layers."""
    import circuitsvis as cv  # noqa: PLC0415

    if not heads:
        raise ValueError("no heads given: pass (layer, head) pairs")
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
