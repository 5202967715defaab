"""Does an edit survive post-training quantization? Forget/retain accuracy in full precision and per scheme.

For the edited model and the base model, under full precision and each scheme:

* ``ptq_gap[scheme] = forget_acc(quantized edited) − forget_acc(fp edited)`` — positive means quantization
  brings forgotten facts back;
* ``recovery_ratio[scheme] = (forget_acc(quantized edited) − forget_acc(fp edited)) ÷
  (forget_acc(fp base) − forget_acc(fp edited))`` — the share of the forgetting that quantization undoes
  (0: none, 1: all). When the denominator is 0 (the edit forgot nothing) the ratio is ``None`` and
  ``recovery_ratio_note`` says why; it is never NaN or ±inf.

Quantized models come from route (b) (:func:`~circuitforge.quant.routes.quantized_copy`, ``route="fast"``,
default) or route (a) (save to a temporary folder, reload with ``BitsAndBytesConfig``, ``route="deploy"``).
"""

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from circuitforge._provenance import versions
from circuitforge.data import Task, evaluate
from circuitforge.models.handle import ModelHandle
from circuitforge.quant.codebook import Scheme
from circuitforge.quant.diagnostics import check_compatible
from circuitforge.quant.routes import Backend, load_quantized, quantized_copy

FORMAT = "circuitforge.quant-survival/1"
Route = Literal["fast", "deploy"]


def _acc(handle: ModelHandle, forget: Task, retain: Task, logits_fn: Any = None) -> dict[str, Any]:
    f = evaluate(handle, forget, logits_fn=logits_fn)
    r = evaluate(handle, retain, logits_fn=logits_fn)
    return {"forget_acc": f.accuracy, "retain_acc": r.accuracy,
            "forget_logprob": f.mean_answer_logprob, "retain_logprob": r.mean_answer_logprob,
            "forget_correct": [int(c) for c in f.correct], "retain_correct": [int(c) for c in r.correct]}


def quantized_accuracy(
    handle: ModelHandle, scheme: Scheme, forget: Task, retain: Task, route: Route = "fast",
    backend: Backend = "bnb",
) -> dict[str, Any]:
    """Forget/retain accuracy (and per-row 0/1 correctness, for paired statistics) of ``handle`` under
    ``scheme`` by the chosen route."""
    if route == "fast":
        return _acc(quantized_copy(handle, scheme, backend=backend), forget, retain)
    from circuitforge.models import save

    with tempfile.TemporaryDirectory(prefix="cf-quant-") as tmp:
        folder = save(handle, Path(tmp) / "model")
        qm = load_quantized(folder, scheme)
        return _acc(handle, forget, retain, logits_fn=qm.logits)


def recovery_ratio(q_forget: float, fp_forget: float, base_forget: float) -> tuple[float | None, str | None]:
    """``(q − fp) / (base − fp)``, or ``(None, reason)`` when ``base == fp``."""
    denom = base_forget - fp_forget
    if denom == 0:
        return None, "undefined: base and edited forget accuracy are equal in full precision (edit forgot nothing)"
    return (q_forget - fp_forget) / denom, None


def _reusable(ref: dict[str, Any] | None, base: ModelHandle, forget: Task, retain: Task, route: Route,
              backend: str) -> bool:
    if not ref:
        return False
    return ref.get("format") == FORMAT and ref["base"].get("sha256") == base.sha256 \
        and ref["forget_task"].get("sha256") == forget.sha256 and ref["retain_task"].get("sha256") == retain.sha256 \
        and ref.get("route") == route and (route != "fast" or ref.get("backend") == backend)


def survival(
    base_handle: ModelHandle, edited_handle: ModelHandle, forget_task: Task, retain_task: Task,
    schemes: Sequence["Scheme | str"] = ("nf4",), route: Route = "fast", backend: Backend = "bnb",
    base_reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The survival table (JSON-serialisable). Keys: ``fp`` (``base``/``edited`` accuracies), ``schemes``
    (per scheme label: ``scheme``, ``base``, ``edited``, ``ptq_gap``, ``recovery_ratio``,
    ``recovery_ratio_note``), ``ptq_gap`` (label → gap), identities of models and tasks, route, versions.

    ``base_reference``: an earlier survival table; its base-model accuracies are reused (not recomputed)
    when it was made on the same base weights, tasks, route and backend (sha256s compared), so several
    edits of one base model share the base evaluations."""
    check_compatible(base_handle, edited_handle)
    parsed = [Scheme.parse(s) for s in schemes]
    ref = base_reference if _reusable(base_reference, base_handle, forget_task, retain_task, route, backend) else None
    fp_edit = _acc(edited_handle, forget_task, retain_task)
    fp_base = ref["fp"]["base"] if ref else _acc(base_handle, forget_task, retain_task)
    table: dict[str, Any] = {}
    for sch in parsed:
        q_edit = quantized_accuracy(edited_handle, sch, forget_task, retain_task, route, backend)
        if ref and sch.label in ref["schemes"]:
            q_base = ref["schemes"][sch.label]["base"]
        else:
            q_base = quantized_accuracy(base_handle, sch, forget_task, retain_task, route, backend)
        ratio, note = recovery_ratio(q_edit["forget_acc"], fp_edit["forget_acc"], fp_base["forget_acc"])
        table[sch.label] = {
            "scheme": sch.to_dict(),
            "edited": q_edit,
            "base": q_base,
            "ptq_gap": q_edit["forget_acc"] - fp_edit["forget_acc"],
            "retain_change": q_edit["retain_acc"] - fp_edit["retain_acc"],
            "recovery_ratio": ratio,
            "recovery_ratio_note": note,
        }
    return {
        "format": FORMAT,
        "base": base_handle.identity(),
        "edited": edited_handle.identity(),
        "forget_task": forget_task.identity(),
        "retain_task": retain_task.identity(),
        "route": route,
        "backend": backend if route == "fast" else "transformers+bitsandbytes",
        "versions": versions(),
        "fp": {"edited": fp_edit, "base": fp_base},
        "schemes": table,
        "ptq_gap": {k: v["ptq_gap"] for k, v in table.items()},
    }
