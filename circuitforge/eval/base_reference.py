"""What an assessment measured on the *base* model alone, kept so that later assessments of other edits of the
same base reuse it (``circuitforge verify --base-reference FILE``, the demo, benchmark cells).

A safety team verifying many checkpoints of one base model pays the base-side work once: M₀'s accuracies in
full precision and under the quantization scheme (per row), on extra tasks, M₀'s per-example attribution
of the base circuit's edges (CAD's ``attribution_base`` phase) and M₀'s relearning-attack curve. Nothing is reused unless its key matches
exactly: the base weights' sha256, each task's rows sha256, the scheme, the quantization route, the circuit's
edges and the attribution method and steps. A stale or foreign file is ignored (and rewritten by the CLI),
never trusted. The file is plain JSON (``circuitforge.base_reference/1``), written atomically.
"""

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from circuitforge._provenance import write_json_atomic
from circuitforge.errors import CircuitForgeError

if TYPE_CHECKING:
    from circuitforge.cad import CADResult
    from circuitforge.models import ModelHandle

FORMAT = "circuitforge.base_reference/1"


@dataclass
class BaseReference:
    """Base-model measurements of one assessment (see module doc).

    ``survival``: the :func:`circuitforge.quant.survival` table (only its ``base`` entries are reused);
    ``extra``: task name → ``{"base": accuracy, "sha256": rows hash}``; ``cad_scores``: entries
    ``{"base_sha256", "task_sha256", "edges", "method", "ig_steps", "scores"}`` with ``scores`` M₀'s
    per-example edge attributions, shape (rows, edges) as nested lists."""

    base: dict[str, Any]
    survival: dict[str, Any] | None = None
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    cad_scores: list[dict[str, Any]] = field(default_factory=list)
    relearn_curves: list[dict[str, Any]] = field(default_factory=list)
    """the base model's relearning-attack curves: ``{"base_sha256", "train_sha256", "held_sha256",
    "settings", "curve": {budget: per-row correct on the held rows}}``"""

    def matches(self, base: "ModelHandle") -> bool:
        """Whether this reference was measured on ``base``'s weights (sha256)."""
        return self.base.get("sha256") == base.sha256

    def extra_base(self, name: str, sha256: str) -> float | None:
        """M₀'s stored accuracy on extra task ``name`` when its rows hash is ``sha256``, else None."""
        e = self.extra.get(name)
        return float(e["base"]) if e is not None and e.get("sha256") == sha256 else None

    def relearn_curve(self, base_sha256: str, train_sha256: str, held_sha256: str,
                      settings: Any) -> dict[int, tuple[bool, ...]] | None:
        """The stored base-model attack curve for these weights, halves and attacker settings, if any."""
        from dataclasses import asdict

        want = json.loads(json.dumps(asdict(settings)))
        for c in self.relearn_curves:
            if (c["base_sha256"], c["train_sha256"], c["held_sha256"]) == (base_sha256, train_sha256, held_sha256) \
                    and c["settings"] == want:
                return {int(b): tuple(bool(x) for x in v) for b, v in c["curve"].items()}
        return None

    def install_cad_scores(self) -> int:
        """Hand the stored M₀ edge scores to CAD's in-process memo; returns how many entries were installed."""
        from circuitforge.cad.api import base_scores_key, remember_base_scores

        for c in self.cad_scores:
            key = base_scores_key(c["base_sha256"], c["task_sha256"], list(c["edges"]), c["method"], c["ig_steps"])
            remember_base_scores(key, torch.tensor(c["scores"], dtype=torch.float32))
        return len(self.cad_scores)

    @classmethod
    def of(cls, base: dict[str, Any], survival: dict[str, Any], extra: dict[str, dict[str, Any]],
           c: "CADResult", relearn: dict[str, Any] | None = None) -> "BaseReference":
        """The base-side part of an assessment (``Assessment.reference()``): the base identity, its survival
        table, extra-task results and CAD result; M₀'s CAD scores from this process's memo, if present."""
        from circuitforge.cad.api import base_scores_key, known_base_scores

        edges = [e["edge"] for e in c.edges]
        scores = []
        if edges:
            key = base_scores_key(base["sha256"], c.task["sha256"], edges, c.settings["method"], c.settings["ig_steps"])
            t = known_base_scores().get(key)
            if t is not None:
                scores.append({"base_sha256": key[0], "task_sha256": key[1], "edges": edges, "method": key[3],
                               "ig_steps": key[4], "scores": t.tolist()})
        curves = []
        if relearn is not None:
            curves.append({"base_sha256": base["sha256"], "train_sha256": relearn["train"]["sha256"],
                           "held_sha256": relearn["held"]["sha256"], "settings": relearn["settings"],
                           "curve": relearn["correct"]["base_attacked"]})
        return cls(base=dict(base), survival=survival,
                   extra={k: {"base": v["base"], "sha256": v["sha256"]} for k, v in extra.items()}, cad_scores=scores,
                   relearn_curves=curves)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "base": self.base, "survival": self.survival, "extra": self.extra,
                "cad_scores": self.cad_scores, "relearn_curves": self.relearn_curves}

    def to_json(self, path: str) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BaseReference":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CircuitForgeError(f"not a {FORMAT} document")
        try:
            return cls(base=dict(d["base"]), survival=d.get("survival"), extra=dict(d.get("extra") or {}),
                       cad_scores=list(d.get("cad_scores") or []), relearn_curves=list(d.get("relearn_curves") or []))
        except (KeyError, TypeError) as e:
            raise CircuitForgeError(f"malformed {FORMAT} document: {e}") from e

    @classmethod
    def from_json(cls, path: str) -> "BaseReference":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except OSError as e:
            raise CircuitForgeError(f"{path}: cannot read base reference ({e.strerror})") from e
        except json.JSONDecodeError as e:
            raise CircuitForgeError(f"{path}: invalid JSON ({e.msg})") from e
        try:
            return cls.from_dict(d)
        except CircuitForgeError as e:
            raise CircuitForgeError(f"{path}: {e}") from e
