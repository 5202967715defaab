"""Stage 8 — eval: the one assessment path (``assess``: the four-property scorecard used by ``verify``, the
benchmark and the demo), the relearning attack, the benchmark runner, the demo pipeline."""

from circuitforge.eval.assess import Assessment, assess
from circuitforge.eval.base_reference import BaseReference
from circuitforge.eval.relearn import RelearnResult, RelearnSettings, relearning_attack
from circuitforge.eval.scorecard import Property, Scorecard, Thresholds, judge
from circuitforge.eval.verify import verify

__all__ = ["Assessment", "BaseReference", "Property", "RelearnResult", "RelearnSettings", "Scorecard", "Thresholds", "assess", "judge",
           "relearning_attack", "verify"]
