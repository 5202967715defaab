"""The four-property scorecard of an unlearned model (paper §5; docs/design.md, "verify" JSON).

| property | value | passes when (default threshold) |
|---|---|---|
| ``forgetting`` | forget accuracy drop, base fp − unlearned fp | ``value ≥ 0.30`` |
| ``retain`` | retain accuracy drop, base fp − unlearned fp | ``value ≤ 0.05`` |
| ``ptq_gap`` | forget acc (unlearned, quantized) − forget acc (unlearned, fp) | ``value ≤ 0.0`` |
| ``structural_erasure`` | the CAD erasure score E (layer-hybrid recovery, :mod:`circuitforge.cad.verdict`) | verdict is ``erasure`` (E's CI above ``e_min``, benign percentile ≥ ``p_min``) |

Thresholds are settings (``Thresholds``), overridable from the CLI, and every report records them.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

from circuitforge._provenance import versions
from circuitforge.eval.stats import Estimate
from circuitforge.eval.stats import judge as ci_judge

FORMAT = "circuitforge.verify/1"


@dataclass(frozen=True)
class Thresholds:
    min_forget_drop: float = 0.30
    max_retain_drop: float = 0.05
    max_ptq_gap: float = 0.0
    cad_z: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_forget_drop <= 1 or not 0 <= self.max_retain_drop <= 1:
            raise ValueError("accuracy-drop thresholds must lie in [0, 1]")
        if self.cad_z <= 0:
            raise ValueError("cad_z must be positive")


@dataclass(frozen=True)
class Property:
    """One property: its measured value, threshold, pass, and evidence (``direction``, ``ci``, ``n``…)."""

    value: float
    threshold: float
    passed: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "threshold": self.threshold, "pass": self.passed, **self.extra}


DIRECTIONS = {"forgetting": ">=", "retain": "<=", "ptq_gap": "<="}


def judge(values: dict[str, float], cad: dict[str, Any], th: "Thresholds", *,
          cis: dict[str, tuple[float, float]] | None = None, n: dict[str, int] | None = None,
          scheme: str = "nf4") -> dict[str, Property]:
    """The pass rules, in one place, for ``verify``, the benchmark and the demo.

    ``values``: ``forgetting`` (forget-accuracy drop, base − edited), ``retain`` (retain-accuracy drop),
    ``ptq_gap`` (quantized − fp forget accuracy of the edited model). A property passes on its point value
    against the threshold (``DIRECTIONS``); with ``cis`` each also carries ``ci`` and a ``call`` of pass /
    fail / undecided from the CI bounds (:func:`circuitforge.eval.stats.judge`). ``cad`` is
    ``CADResult.summary()``: ``structural_erasure`` passes iff its verdict is ``erasure``; its value is the
    erasure score E with E's CI, against the calibrated ``e_min`` (the paper's CAD z is kept as ``cad_z``).
    Returns keyword arguments for :class:`Scorecard`'s four properties.
    """
    cis, n = cis or {}, n or {}
    thr = {"forgetting": th.min_forget_drop, "retain": th.max_retain_drop, "ptq_gap": th.max_ptq_gap}
    out: dict[str, Property] = {}
    for name, direction in DIRECTIONS.items():
        v, t = float(values[name]), thr[name]
        ok = v >= t if direction == ">=" else v <= t
        extra: dict[str, Any] = {"direction": direction}
        if name in cis:
            lo, hi = (float(x) for x in cis[name])
            est = Estimate(v, lo, hi, int(n.get(name, 0)), 1)
            extra.update(ci=[lo, hi], call=ci_judge(est, t, direction))  # type: ignore[arg-type]
        if name in n:
            extra["n"] = int(n[name])
        if name == "ptq_gap":
            extra["scheme"] = scheme
        out[name] = Property(v, t, ok, extra)
    verdict = str(cad.get("verdict"))
    extra_s: dict[str, Any] = {"verdict": verdict, "direction": "verdict == erasure", "rule": cad.get("rule"),
                               "cad_z": cad.get("z")}
    if cad.get("erasure_score_ci") is not None:
        extra_s["ci"] = list(cad["erasure_score_ci"])
    if "structural_erasure" in n:
        extra_s["n"] = int(n["structural_erasure"])
    e = cad.get("erasure_score")
    e_min = (cad.get("thresholds") or {}).get("e_min")
    out["structural_erasure"] = Property(float("nan") if e is None else float(e),
                                         float("nan") if e_min is None else float(e_min), verdict == "erasure", extra_s)
    return out


@dataclass(frozen=True)
class Scorecard:
    """The verdict on one unlearned model. ``to_dict`` gives the ``circuitforge.verify/1`` JSON."""

    base: dict[str, Any]
    unlearned: dict[str, Any]
    forgetting: Property
    retain: Property
    ptq_gap: Property
    structural_erasure: Property
    cad: dict[str, Any]
    accuracies: dict[str, float]
    thresholds: Thresholds
    tasks: dict[str, Any]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(p.passed for p in (self.forgetting, self.retain, self.ptq_gap, self.structural_erasure))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "base": self.base,
            "unlearned": self.unlearned,
            "properties": {
                "forgetting": self.forgetting.to_dict(),
                "retain": self.retain.to_dict(),
                "ptq_gap": self.ptq_gap.to_dict(),
                "structural_erasure": self.structural_erasure.to_dict(),
            },
            "cad": self.cad,
            "pass": self.passed,
            "accuracies": self.accuracies,
            "thresholds": asdict(self.thresholds),
            "tasks": self.tasks,
            "seconds": self.seconds,
            "versions": versions(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scorecard":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")

        def prop(name: str) -> Property:
            p = dict(d["properties"][name])
            return Property(p.pop("value"), p.pop("threshold"), p.pop("pass"), p)

        return cls(d["base"], d["unlearned"], prop("forgetting"), prop("retain"), prop("ptq_gap"),
                   prop("structural_erasure"), d["cad"], d["accuracies"], Thresholds(**d["thresholds"]),
                   d["tasks"], d.get("seconds", 0.0))
