"""Stage 3 — attribution: the component graph (GQA-native, q/k/v-split edges), exact activation
patching, EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024), and the metrics they score.

>>> from circuitforge.attribution import attribute            # doctest: +SKIP
>>> g = attribute(handle, task, method="eap", level="edge")   # doctest: +SKIP
>>> g.node_score("a3.h1"), g.edge_score("a0.h1->a3.kv0<v>")   # doctest: +SKIP

Sign convention everywhere: positive = the component pushes the metric toward the clean answer.
"""

from circuitforge.attribution.api import METHODS, attribute
from circuitforge.attribution.corruption import CORRUPTIONS, PromptBatch, encode_task
from circuitforge.attribution.graph import (
    FORMAT,
    Graph,
    Layout,
    layout,
    layout_of,
    reader_component,
    split_edge,
)
from circuitforge.attribution.metrics import answer_logprob, logit_diff

__all__ = [
    "CORRUPTIONS", "FORMAT", "METHODS", "Graph", "Layout", "PromptBatch", "answer_logprob", "attribute",
    "encode_task", "layout", "layout_of", "logit_diff", "reader_component", "split_edge",
]
