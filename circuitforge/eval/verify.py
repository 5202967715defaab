"""``verify``: the four-property scorecard of a (possibly third-party) unlearned checkpoint.

A thin name over :func:`circuitforge.eval.assess.assess` (the one assessment path, shared with the
benchmark and the demo) that returns ``(scorecard, cad_result)``. Loads nothing itself: the CLI loads both
models (safetensors only, no remote code).
"""

from typing import Any

from circuitforge.cad import CADResult
from circuitforge.data import Task
from circuitforge.eval.assess import assess
from circuitforge.eval.scorecard import Scorecard
from circuitforge.models import ModelHandle


def verify(base: ModelHandle, unlearned: ModelHandle, forget: Task, retain: Task, **kw: Any,
           ) -> tuple[Scorecard, CADResult]:
    """``assess(base, unlearned, forget, retain, **kw)`` as ``(scorecard, cad_result)``."""
    a = assess(base, unlearned, forget, retain, **kw)
    return a.scorecard, a.cad
