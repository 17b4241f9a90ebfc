"""The types mechlin's signatures share, free at run time.

``Model`` is what every analysis takes: a TransformerLens ``TransformerBridge`` (what
``mechlin.load_model`` and ``mechlin.tiny_model`` return). Type checkers see the bridge; at run
time the alias is ``Any``, so importing it costs nothing and imports no model code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    Model: TypeAlias = TransformerBridge
else:
    Model = Any

__all__ = ["Model"]
