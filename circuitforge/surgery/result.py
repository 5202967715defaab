"""The result every unlearning method returns, and its JSON manifest.

The manifest (format ``circuitforge.unlearn/1``) is what ``circuitforge unlearn`` writes next to the
checkpoint (inside ``circuitforge.json``): method, settings, seed, base and edited identities, task
identities, per-tensor edited-parameter counts, stop reason, loss history, wall time and versions.
"""

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuitforge._provenance import versions
from circuitforge.models.handle import ModelHandle

FORMAT = "circuitforge.unlearn/1"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    return x


def edit_counts(
    base_state: dict[str, torch.Tensor], edited: ModelHandle, mask: dict[str, torch.Tensor] | None = None
) -> dict[str, Any]:
    """Exact (``!=``) per-tensor changed counts of ``edited`` against ``base_state`` (HF name → tensor).

    Returns ``n_params``, ``n_changed``, ``changed_share`` (of all parameters), ``n_mask`` (editable
    parameters; all when no mask), ``n_changed_outside_mask`` and ``tensors`` (name → n, n_changed[, n_mask])
    for every tensor with a change or a mask entry.
    """
    params = edited.named_parameters()
    tot = changed = n_mask = outside = 0
    tensors: dict[str, dict[str, int]] = {}
    for name, p in params.items():
        diff = p.detach().cpu() != base_state[name]
        n, c = p.numel(), int(diff.sum())
        tot += n
        changed += c
        row: dict[str, int] = {"n": n, "n_changed": c}
        if mask is not None:
            m = mask.get(name)
            k = int(m.sum()) if m is not None else 0
            n_mask += k
            o = int((diff & ~m).sum()) if m is not None else c
            outside += o
            if k:
                row["n_mask"] = k
        if c or row.get("n_mask"):
            tensors[name] = row
    return {
        "n_params": tot,
        "n_changed": changed,
        "changed_share": changed / tot if tot else 0.0,
        "n_mask": n_mask if mask is not None else tot,
        "n_changed_outside_mask": outside,
        "tensors": tensors,
    }


@dataclass(eq=False)
class UnlearnResult:
    """An edited model and how it was made.

    Attributes:
        handle: the edited model (an independent clone; the input handle is never modified).
        method: ``"mansu"``, ``"ga"``, ``"graddiff"``, ``"npo"``, ``"rmu"`` or ``"sure"``.
        settings: the method's settings dataclass as a dict (JSON-able).
        seed: the seed every random choice was derived from.
        base: identity of the input model (``spec``, ``sha256``).
        forget, retain: task identities.
        mask_stats: :func:`edit_counts` (exact parameter diff), plus method-specific mask facts.
        loss_history: one dict per logged step (``step``, losses, ``forget_acc``... as the method logs).
        stop_reason: why the loop ended (``forget_target_reached``; ``retain_budget_spent``: the retain
            protection stopped the run — for MANSU, the bound on the applied edit's retain-output change
            left no move; ``max_steps``; ``no_candidates``).
        diagnostics: method-specific extras (MANSU: circuit, code-flip verification, retain-output bound...).
        wall_time_s: seconds spent in the method (including circuit discovery for MANSU).
    """

    handle: ModelHandle
    method: str
    settings: dict[str, Any]
    seed: int
    base: dict[str, str]
    forget: dict[str, Any]
    retain: dict[str, Any]
    mask_stats: dict[str, Any]
    loss_history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    diagnostics: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0

    def manifest(self) -> dict[str, Any]:
        """The JSON-serialisable record (see module docstring)."""
        self.handle.invalidate_identity()
        return _jsonable({
            "format": FORMAT,
            "method": self.method,
            "settings": self.settings,
            "seed": self.seed,
            "base": self.base,
            "edited": self.handle.identity(),
            "tasks": {"forget": self.forget, "retain": self.retain},
            "edited_parameters": self.mask_stats,
            "stop_reason": self.stop_reason,
            "loss_history": self.loss_history,
            "diagnostics": self.diagnostics,
            "wall_time_s": self.wall_time_s,
            "versions": versions(),
        })

    def save(self, folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Save the edited model as an HF safetensors checkpoint with ``{"unlearn": manifest}`` in
        ``circuitforge.json`` (see :func:`circuitforge.models.save`)."""
        from circuitforge.models import save

        return save(self.handle, folder, {"unlearn": self.manifest()}, overwrite=overwrite)
