"""The circuit search as a frozen spec: one place that says how the base forget circuit is found.

MANSU (which edits the circuit), CAD (which compares M₀ and M₁ on it), the benchmark and the demo all take
a :class:`CircuitSearch` instead of spelling out ``minimal_circuit(…, faithfulness=0.8, method="eap-ig")``
each, so they agree on the circuit by construction and a cached circuit is reused only when it was found
with the same spec on the same weights and rows (:meth:`CircuitSearch.matches`).

>>> from circuitforge.circuits import CircuitSearch        # doctest: +SKIP
>>> circuit = CircuitSearch(rows=24).find(handle, forget)  # doctest: +SKIP
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from circuitforge.circuits.circuit import Circuit
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle


@dataclass(frozen=True)
class CircuitSearch:
    """How to find a minimal faithful circuit.

    Attributes:
        method: attribution method ranking the edges (``eap`` or ``eap-ig``).
        ig_steps: integrated-gradient steps (EAP-IG only).
        faithfulness: target faithfulness of the minimal circuit, in (0, 1].
        rows: how many task rows (the first ``rows``) the search uses; ``None`` = all.
        baselines: also measure same-size random and weight-magnitude circuits (evidence, costs passes).
    """

    method: Literal["eap", "eap-ig"] = "eap-ig"
    ig_steps: int = 5
    faithfulness: float = 0.8
    rows: int | None = 24
    baselines: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("eap", "eap-ig"):
            raise ValueError(f"circuit search method must be 'eap' or 'eap-ig', not {self.method!r}")
        if self.ig_steps < 1:
            raise ValueError("ig_steps must be ≥ 1")
        if not 0 < self.faithfulness <= 1:
            raise ValueError("faithfulness must lie in (0, 1]")
        if self.rows is not None and self.rows < 1:
            raise ValueError("rows must be ≥ 1 (or None for all rows)")

    def task(self, task: Task) -> Task:
        """The rows the search runs on."""
        return task if self.rows is None else task.head(self.rows)

    def find(self, handle: ModelHandle, task: Task, progress: Callable[[str], None] | None = None) -> Circuit:
        """The minimal circuit of ``handle`` on (the first ``rows`` of) ``task``."""
        from circuitforge.circuits.minimal import minimal_circuit

        rows = self.task(task)
        if len(rows) == 0:
            raise CircuitForgeError("the circuit search needs at least one task row")
        kw: dict[str, Any] = {"ig_steps": self.ig_steps} if self.method == "eap-ig" else {}
        c = minimal_circuit(handle, rows, faithfulness=self.faithfulness, method=self.method,
                            baselines=self.baselines, progress=progress, **kw)
        c.selection["search"] = self.to_dict()
        return c

    def matches(self, circuit: Circuit, handle: ModelHandle, task: Task) -> bool:
        """True when ``circuit`` was found with this spec on ``handle``'s weights and these rows."""
        if not circuit.found_on(handle, self.task(task)):
            return False
        m = circuit.method
        if m.get("name") != self.method or (self.method == "eap-ig" and int(m.get("ig_steps", -1)) != self.ig_steps):
            return False
        target = circuit.selection.get("target")
        return target is None or abs(float(target) - self.faithfulness) < 1e-12

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CircuitSearch":
        return cls(**d)
