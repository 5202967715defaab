"""Stage 4 — circuits: choosing a subgraph of an attribution graph (top-n, threshold, greedy),
pruning, faithfulness by real edge ablation, the faithfulness curve and the minimal faithful circuit.

>>> from circuitforge.circuits import minimal_circuit, faithfulness   # doctest: +SKIP
>>> c = minimal_circuit(handle, task, faithfulness=0.8)              # doctest: +SKIP
>>> c.reached, c.n_edges, c.faithfulness, sorted(c.nodes)[:3]        # doctest: +SKIP
"""

from circuitforge.circuits.circuit import FORMAT, Circuit, edges_of, keep_mask
from circuitforge.circuits.faithfulness import Evaluator, faithfulness, faithfulness_report
from circuitforge.circuits.minimal import faithfulness_curve, minimal_circuit
from circuitforge.circuits.search import CircuitSearch
from circuitforge.circuits.select import (
    nodes_to_keep,
    prune,
    random_keep,
    select_greedy,
    select_threshold,
    select_top_n,
    weight_keep,
    weight_scores,
)
from circuitforge.circuits.stability import jaccard, spearman, stability

__all__ = [
    "FORMAT", "Circuit", "CircuitSearch", "Evaluator", "edges_of", "faithfulness", "faithfulness_curve", "faithfulness_report",
    "jaccard", "keep_mask", "minimal_circuit", "nodes_to_keep", "prune", "random_keep", "select_greedy",
    "select_threshold", "select_top_n", "spearman", "stability", "weight_keep", "weight_scores",
]
