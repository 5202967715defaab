"""Stage 7 — cad: Circuit Attribution Divergence, its null, the erasure/suppression verdict, controls."""

from circuitforge.cad.api import CADResult, CADSettings, cad, check_compatible
from circuitforge.cad.controls import erasure_edit, suppression_edit, unchanged_copy, with_base_readout
from circuitforge.cad.divergence import cad_value, calibrated_cad

__all__ = ["CADResult", "CADSettings", "cad", "cad_value", "calibrated_cad", "check_compatible", "erasure_edit",
           "suppression_edit", "unchanged_copy", "with_base_readout"]
