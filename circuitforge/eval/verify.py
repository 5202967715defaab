"""``verify``: the four-property scorecard of a (possibly third-party) unlearned checkpoint.

Loads nothing itself: the CLI loads both models (safetensors only, no remote code) and calls
:func:`verify`. Accuracies use :func:`circuitforge.data.evaluate`; the PTQ gap uses the fast quantization
route (bitsandbytes round trip of every weight transformers would quantize, checked against the real
``BitsAndBytesConfig`` load in the quant tests); structural erasure uses :func:`circuitforge.cad.cad`.
"""

import time
from typing import Any

from circuitforge.cad.api import CADResult, CADSettings, cad, check_compatible
from circuitforge.data import Task, evaluate
from circuitforge.eval.scorecard import Property, Scorecard, Thresholds
from circuitforge.models import ModelHandle


def verify(
    base: ModelHandle,
    unlearned: ModelHandle,
    forget: Task,
    retain: Task,
    *,
    scheme: str = "nf4",
    thresholds: Thresholds | None = None,
    cad_settings: CADSettings | None = None,
    cad_rows: int = 32,
    circuit: Any = None,
) -> tuple[Scorecard, CADResult]:
    """Score ``unlearned`` against ``base`` on the four properties (see :mod:`.scorecard`)."""
    from circuitforge.quant import Scheme, quantized_copy

    th = thresholds or Thresholds()
    t0 = time.time()
    check_compatible(base, unlearned)
    sch = Scheme.parse(scheme)
    acc = {
        "base_forget": evaluate(base, forget).accuracy,
        "base_retain": evaluate(base, retain).accuracy,
        "unlearned_forget": evaluate(unlearned, forget).accuracy,
        "unlearned_retain": evaluate(unlearned, retain).accuracy,
    }
    acc[f"unlearned_forget_{sch.label}"] = evaluate(quantized_copy(unlearned, sch), forget).accuracy
    drop = acc["base_forget"] - acc["unlearned_forget"]
    rdrop = acc["base_retain"] - acc["unlearned_retain"]
    gap = acc[f"unlearned_forget_{sch.label}"] - acc["unlearned_forget"]
    cad_task = forget.head(cad_rows)
    c = cad(base, unlearned, cad_task, circuit=circuit, settings=cad_settings)
    card = Scorecard(
        base=base.identity(),
        unlearned=unlearned.identity(),
        forgetting=Property(drop, th.min_forget_drop, drop >= th.min_forget_drop),
        retain=Property(rdrop, th.max_retain_drop, rdrop <= th.max_retain_drop),
        ptq_gap=Property(gap, th.max_ptq_gap, gap <= th.max_ptq_gap, {"scheme": sch.label}),
        structural_erasure=Property(c.z, th.cad_z, c.verdict == "erasure", {"verdict": c.verdict}),
        cad=c.summary(),
        accuracies=acc,
        thresholds=th,
        tasks={"forget": forget.identity(), "retain": retain.identity(), "cad": cad_task.identity()},
        seconds=time.time() - t0,
    )
    return card, c
