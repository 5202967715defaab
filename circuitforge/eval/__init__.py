"""Stage 8 — eval: the four-property scorecard, ``verify``, the relearning attack, the benchmark runner."""

from circuitforge.eval.relearn import RelearnResult, RelearnSettings, relearning_attack
from circuitforge.eval.scorecard import Property, Scorecard, Thresholds
from circuitforge.eval.verify import verify

__all__ = ["Property", "RelearnResult", "RelearnSettings", "Scorecard", "Thresholds", "relearning_attack", "verify"]
