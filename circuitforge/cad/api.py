"""Circuit Attribution Divergence (CAD): was the forget circuit erased, or is its output suppressed?

Given a base model M₀, an edited model M₁ and the forget task (cloze rows with corrupt counterparts):

1. **Base circuit.** C is the minimal faithful circuit of M₀ (edge level, default EAP-IG, faithfulness
   ≥ 0.8) unless one is passed in.
2. **Three attributions of C's edges, per example**, all with the *base* metric (logit of the answer −
   logit of the corrupt answer, denoising sign: positive = pushes toward the clean answer):
   ``s₀`` on M₀; ``s_beh`` on M₁ (its own readout: behaviour); ``s_mech`` on M₁'s layers read through
   M₀'s final norm and unembedding (:func:`~circuitforge.cad.controls.with_base_readout`: mechanism).
   An edit that only changes the readout leaves ``s_mech`` exactly equal to ``s₀`` while ``s_beh`` falls.
3. **Divergences with a null** (:mod:`.divergence`): CAD = Σ|ā₁ − ā₀| / Σ|ā₀| over C's edges, calibrated
   by split halves of the prompts (M₀ vs M₀ gives the null). The mechanistic divergence is computed on
   C's *upstream* edges (source layer < ``n_layers − late_layers``) so that an edit in the last layers,
   on the logit side, is not mistaken for erasure of the knowledge-carrying components.
4. **Verdict** (threshold ``z_threshold``, default 3): ``erasure`` when the upstream mechanistic CAD is
   significant; else ``suppression`` when the behavioural CAD is significant; else ``unchanged``.
5. **Evidence:** C's faithfulness inside M₁ (everything outside C ablated), per-layer attribution mass,
   and every edge's signed change.
"""

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float

from circuitforge._provenance import versions, write_json_atomic
from circuitforge.cad.controls import with_base_readout
from circuitforge.cad.divergence import NullCalibrated, calibrated_cad
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models import ModelHandle, parse_node

FORMAT = "circuitforge.cad/1"
Verdict = Literal["erasure", "suppression", "unchanged"]


@dataclass(frozen=True)
class CADSettings:
    method: Literal["eap", "eap-ig"] = "eap-ig"
    ig_steps: int = 5
    faithfulness: float = 0.8
    n_null: int = 200
    z_threshold: float = 3.0
    late_layers: int | None = None
    """layers counted as the logit side; None = max(1, round(n_layers / 5))"""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("eap", "eap-ig"):
            raise ValueError(f"method must be 'eap' or 'eap-ig', not {self.method!r}")
        if self.ig_steps < 1 or self.n_null < 10 or self.z_threshold <= 0 or not 0 < self.faithfulness <= 1:
            raise ValueError("ig_steps ≥ 1, n_null ≥ 10, z_threshold > 0 and 0 < faithfulness ≤ 1 required")


def check_compatible(base: ModelHandle, edited: ModelHandle) -> None:
    """Refuse pairs whose architecture or tokenizer differ (CAD compares the same graph ids)."""
    if base.architecture() != edited.architecture():
        raise CircuitForgeError(f"architectures differ: {base.architecture()} vs {edited.architecture()}")
    if base.tokenizer.get_vocab() != edited.tokenizer.get_vocab():
        raise CircuitForgeError("tokenizers differ: the base and edited models must share one vocabulary")


def _layer(node: str) -> int:
    comp = node.split("<", 1)[0]
    if comp in ("input",):
        return -1
    if comp == "logits":
        return 10**9
    return parse_node(comp)[1]


def per_example_edge_scores(handle: ModelHandle, task: Task, edges: list[str], settings: CADSettings) -> Float[torch.Tensor, "examples edges"]:
    """Attribution of ``edges`` on each row of ``task`` (row i of the result = row i of the task), from one
    batched EAP / EAP-IG run with ``per_row=True``; metric: answer − corrupt answer logit difference."""
    from circuitforge.attribution import attribute
    from circuitforge.attribution.graph import split_edge

    g = attribute(handle, task, metric="logit_diff", method=settings.method, level="edge",
                  ig_steps=settings.ig_steps, per_row=True)
    rows = getattr(g, "row_edge_scores", None)
    if rows is None:
        raise CircuitForgeError("attribution did not return per-row edge scores")
    lay = g.layout
    idx = [(lay.writer_index(src), lay.reader_index(dst)) for src, dst in map(split_edge, edges)]
    w = torch.tensor([a for a, _ in idx], dtype=torch.long)
    r = torch.tensor([b for _, b in idx], dtype=torch.long)
    return rows[:, w, r].float()


@dataclass
class CADResult:
    """CAD verdict and its evidence. ``to_dict`` gives the ``circuitforge.cad/1`` JSON."""

    verdict: Verdict
    value: float
    z: float
    behavioural: dict[str, Any]
    mechanistic: dict[str, Any]
    mechanistic_upstream: dict[str, Any]
    faithfulness_base: float | None
    faithfulness_edited: float | None
    edges: list[dict[str, Any]]
    layer_mass: dict[str, Any]
    circuit: dict[str, Any]
    settings: dict[str, Any]
    base: dict[str, Any]
    edited: dict[str, Any]
    task: dict[str, Any]
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=versions)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CADResult":
        if d.get("format") != FORMAT:
            raise CircuitForgeError(f"not a {FORMAT} document")
        return cls(**{k: v for k, v in d.items() if k != "format"})

    def to_json(self, path: str) -> None:
        write_json_atomic(path, self.to_dict())

    def summary(self) -> dict[str, Any]:
        """The ``cad`` block of ``circuitforge verify``'s JSON."""
        return {"value": self.value, "z": self.z, "verdict": self.verdict,
                "behavioural_value": self.behavioural["value"], "behavioural_z": self.behavioural["z"],
                "faithfulness_edited": self.faithfulness_edited, "circuit_edges": len(self.edges)}


def _calib_dict(c: NullCalibrated) -> dict[str, Any]:
    return {"value": c.value, "full": c.full, "z": c.z, "null_mean": c.null_mean, "null_std": c.null_std,
            "null": list(c.null)}


def cad(base: ModelHandle, edited: ModelHandle, task: Task, *, circuit: Any = None,
        settings: CADSettings | None = None) -> CADResult:
    """Compare M₀ = ``base`` and M₁ = ``edited`` on the base circuit of ``task`` (see module doc)."""
    from circuitforge.circuits import faithfulness, minimal_circuit

    s = settings or CADSettings()
    t0 = time.time()
    check_compatible(base, edited)
    if len(task) < 4:
        raise CircuitForgeError("CAD needs at least 4 task rows (its null splits the prompts in halves)")
    if circuit is None:
        circuit = minimal_circuit(base, task, faithfulness=s.faithfulness, method=s.method, ig_steps=s.ig_steps)
    edges = list(circuit.edges)
    if not edges:
        raise CircuitForgeError("the base circuit has no edges")
    s0 = per_example_edge_scores(base, task, edges, s)
    s_beh = per_example_edge_scores(edited, task, edges, s)
    s_mech = per_example_edge_scores(with_base_readout(edited, base), task, edges, s)

    late = s.late_layers if s.late_layers is not None else max(1, round(base.n_layers / 5))
    cut = base.n_layers - late
    src_layers = [_layer(e.split("->", 1)[0]) for e in edges]
    up = torch.tensor([layer < cut for layer in src_layers])
    beh = calibrated_cad(s0, s_beh, s.n_null, s.seed)
    mech = calibrated_cad(s0, s_mech, s.n_null, s.seed)
    mech_up = calibrated_cad(s0[:, up], s_mech[:, up], s.n_null, s.seed) if bool(up.any()) else mech
    if mech_up.z >= s.z_threshold:
        verdict: Verdict = "erasure"
    elif beh.z >= s.z_threshold:
        verdict = "suppression"
    else:
        verdict = "unchanged"

    m0, mb, mm = s0.mean(0), s_beh.mean(0), s_mech.mean(0)
    layers = sorted(set(src_layers))
    mass = {
        "layers": layers,
        "base": [float(m0[[i for i, x in enumerate(src_layers) if x == layer]].abs().sum()) for layer in layers],
        "edited_own_readout": [float(mb[[i for i, x in enumerate(src_layers) if x == layer]].abs().sum()) for layer in layers],
        "edited_base_readout": [float(mm[[i for i, x in enumerate(src_layers) if x == layer]].abs().sum()) for layer in layers],
        "upstream_cut_layer": cut,
    }
    edge_rows = [{"edge": e, "base": float(m0[i]), "edited_own_readout": float(mb[i]),
                  "edited_base_readout": float(mm[i]), "change": float(mm[i] - m0[i]),
                  "behavioural_change": float(mb[i] - m0[i]), "upstream": bool(up[i])} for i, e in enumerate(edges)]

    def _faith(h: ModelHandle) -> float | None:
        try:
            v = float(faithfulness(h, task, circuit))
        except (ZeroDivisionError, CircuitForgeError):
            return None
        return v if v == v else None

    circ = circuit.to_dict() if hasattr(circuit, "to_dict") else {"edges": edges}
    return CADResult(
        verdict=verdict, value=mech_up.value, z=mech_up.z, behavioural=_calib_dict(beh),
        mechanistic=_calib_dict(mech), mechanistic_upstream=_calib_dict(mech_up),
        faithfulness_base=_faith(base), faithfulness_edited=_faith(edited), edges=edge_rows, layer_mass=mass,
        circuit=circ, settings=asdict(s), base=base.identity(), edited=edited.identity(), task=task.identity(),
        seconds=time.time() - t0,
    )
