"""The whole account of factual recall (Geva et al. 2023) in one call, with one HTML report.

``dissect_recall`` runs, on the facts a model knows: attention knockout from the last position
to the subject, non-subject (relation) and last positions (relation propagation and attribute
extraction edges); extraction rates of MHSA vs MLP outputs per layer, and the heads that
extract; the attributes rate of the residual stream at the last subject token and elsewhere,
and the drop of that rate when early MLPs or attention are zeroed (subject enrichment). It
writes a report with the figures, the attention patterns of the top extracting heads, and a
generated summary of where each stage happens in this model.

The paper's account, which the summary checks: relation edges matter earlier than subject
edges; MHSA extracts the attribute far more often than MLP; the attributes rate at the last
subject token rises through early-middle layers, driven by early MLPs.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mechlin import viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.datasets.countries import country_attributes
from mechlin.datasets.facts import FactLike, as_facts, known_facts
from mechlin.errors import EmptyInputError
from mechlin.recall.enrichment import (
    AttributesRate,
    SublayerKnockout,
    attributes_rate,
    sublayer_knockout_rate,
)
from mechlin.recall.extraction import ExtractionRates, extraction_rates
from mechlin.recall.knockout import KnockoutCurves, knockout_curves
from mechlin.results import Result


@dataclass(frozen=True)
class RecallDissection(Result):
    """Geva et al.'s three stages measured on one model."""

    _plottable = False  # its pieces plot; the notebook view is the summary (``report`` for all)

    model_name: str
    n_facts: int
    n_known: int
    knockout: KnockoutCurves
    extraction: ExtractionRates
    attributes: AttributesRate | None  # None when no fact had attribute words
    mlp_knockout: SublayerKnockout | None
    attn_knockout: SublayerKnockout | None
    heads_html: str  # circuitsvis patterns of the top extracting heads on one prompt

    def summary(self) -> str:
        """Where each stage happens in this model, in words, with the numbers."""
        rel_layer, rel_drop = self.knockout.bite("non_subject")
        sub_layer, sub_drop = self.knockout.bite("subject")
        order = (
            "earlier than"
            if rel_layer < sub_layer
            else ("at the same layer as" if rel_layer == sub_layer else "later than")
        )
        lines = [
            f"{self.model_name}: {self.n_known} of {self.n_facts} facts known and analysed.",
            f"Relation propagation: blocking the last position's attention to non-subject "
            f"positions hurts most around layer {rel_layer} ({rel_drop:.0f}% change of p(answer)); "
            f"subject edges bite around layer {sub_layer} ({sub_drop:.0f}%): relation edges "
            f"matter {order} subject edges (the paper: earlier).",
            f"Attribute extraction: an MHSA output yields the prediction as top-1 in some layer "
            f"for {self.extraction.mhsa_any:.0%} of prompts, an MLP output for "
            f"{self.extraction.mlp_any:.0%} (the paper: MHSA far more, ~68%). Peak per-layer "
            f"MHSA rate at layer {int(self.extraction.mhsa_rate.argmax())}.",
        ]
        if self.attributes is not None:
            rate = self.attributes.rate
            last_subj = self.attributes.positions.index("last subject token")
            last = self.attributes.positions.index("last token")
            peak = int(rate[last_subj].argmax())
            lines.append(
                f"Subject enrichment: the attributes rate at the last subject token peaks at "
                f"{float(rate[last_subj, peak]):.0%} in layer {peak} (last token: "
                f"{float(rate[last].max()):.0%} at most), over {self.attributes.n_facts} facts "
                f"with attribute words."
            )
        for knock in (self.mlp_knockout, self.attn_knockout):
            if knock is not None:
                worst = int(knock.rate.argmin())
                lines.append(
                    f"Zeroing {knock.sublayer.upper()} layers {knock.starts[worst]}.."
                    f"{knock.starts[worst] + knock.window - 1} lowers the rate at layer "
                    f"{knock.at_layer} from {knock.baseline:.0%} to {float(knock.rate[worst]):.0%}."
                )
        return "\n".join(lines)

    def report(self, path: str | os.PathLike[str]) -> Path:
        """Write the HTML report (it opens offline) and return its path."""
        fig = viz.plot_html
        sections = [
            ("Summary", f"<pre>{html.escape(self.summary())}</pre>"),
            (
                "Attention knockout: relation propagation and extraction edges",
                fig(self.knockout) + f"<pre>{html.escape(self.knockout.summary())}</pre>",
            ),
            (
                "Attribute extraction: MHSA vs MLP by layer",
                fig(self.extraction) + f"<pre>{html.escape(self.extraction.summary())}</pre>",
            ),
        ]
        if self.attributes is not None:
            body = fig(self.attributes)
            for knock in (self.mlp_knockout, self.attn_knockout):
                if knock is not None:
                    body += fig(knock)
            sections.append(("Subject enrichment: attributes rate by layer and position", body))
        sections.append(("Attention patterns of the top extracting heads", self.heads_html))
        return viz.write_report(path, f"Dissecting factual recall: {self.model_name}", sections)


@checked
def dissect_recall(
    model: Model,
    facts: Iterable[FactLike],
    *,
    attributes: Mapping[str, Iterable[str]] | None = None,
    window: int = 9,
    enrichment_window: int = 10,
    progress: bool = True,
) -> RecallDissection:
    """Geva et al.'s three-stage account on the facts ``model`` knows (see module docstring).

    Args:
        attributes: subject -> attribute words for the enrichment measures; ``None`` uses the
            shipped country knowledge base (facts whose subject is not a country are counted
            as skipped there).
        window: layers per attention-knockout window (9: [l-4, l+4]).
        enrichment_window: layers zeroed together in the sublayer knockout (10).
    """
    items = as_facts(facts)
    split = known_facts(model, items, progress=progress)
    known = list(split.known)
    if not known:
        raise EmptyInputError(f"the model knows none of the {len(items)} facts: nothing to dissect")
    knock = knockout_curves(model, known, window=window, progress=progress)
    extraction = extraction_rates(model, known, progress=progress)
    if attributes is None:
        attributes = country_attributes()
    with_attrs = [f for f in known if f.subject in attributes]
    attr = mlp_knock = attn_knock = None
    if with_attrs:
        attr = attributes_rate(model, with_attrs, attributes, progress=progress)
        at = int(attr.rate[attr.positions.index("last subject token")].argmax())
        at = max(at, min(enrichment_window - 1, int(model.cfg.n_layers) - 1))
        mlp_knock = sublayer_knockout_rate(
            model,
            with_attrs,
            attributes,
            sublayer="mlp",
            at_layer=at,
            window=enrichment_window,
            progress=progress,
        )
        attn_knock = sublayer_knockout_rate(
            model,
            with_attrs,
            attributes,
            sublayer="attn",
            at_layer=at,
            window=enrichment_window,
            progress=progress,
        )
    top = [(layer, head) for layer, head, _ in extraction.top_heads(3)]
    heads = viz.head_patterns_html(model, known[0].prompt, top)
    name = str(getattr(model.cfg, "model_name", "") or type(model).__name__)
    return RecallDissection(
        model_name=name,
        n_facts=len(items),
        n_known=len(known),
        knockout=knock,
        extraction=extraction,
        attributes=attr,
        mlp_knockout=mlp_knock,
        attn_knockout=attn_knock,
        heads_html=heads,
    )
