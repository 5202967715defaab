"""Stage 7 — cad: erasure vs suppression from recovery evidence (layer hybrids, matched benign null,
calibrated verdict), the paper's Circuit Attribution Divergence as a comparator, and known-label controls."""

from circuitforge.cad.api import CADResult, CADSettings, cad, check_compatible, recovery_evidence
from circuitforge.cad.benign import edit_stats, matched_random_sign
from circuitforge.cad.controls import (
    block_ascent,
    early_ascent,
    erasure_edit,
    late_ascent,
    subject_erasure,
    suppression_edit,
    unchanged_copy,
    with_base_readout,
)
from circuitforge.cad.divergence import cad_value, calibrated_cad
from circuitforge.cad.hybrids import hybrid_layers, hybrid_margins
from circuitforge.cad.recovery import Recovery, recovery
from circuitforge.cad.verdict import Verdict, decide

__all__ = ["CADResult", "CADSettings", "Recovery", "Verdict", "block_ascent", "cad", "early_ascent", "subject_erasure", "cad_value", "calibrated_cad", "check_compatible",
           "decide", "edit_stats", "erasure_edit", "hybrid_layers", "hybrid_margins", "late_ascent",
           "matched_random_sign", "recovery", "recovery_evidence", "suppression_edit", "unchanged_copy",
           "with_base_readout"]
