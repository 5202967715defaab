"""The one assessment path: base model M₀ + edited model M₁ + tasks → the four-property :class:`Scorecard`.

``circuitforge verify``, every benchmark cell and the demo call :func:`assess`; the pass rules live in
:func:`circuitforge.eval.scorecard.judge` and nowhere else. Steps:

1. **Refuse bad input** (:func:`check_inputs`, one-line :class:`~circuitforge.errors.CircuitForgeError`):
   different architecture or tokenizer, an empty task, a prompt longer than the model's context, non-finite
   weights, a given circuit that was not found on this base model and these CAD rows.
2. **Accuracies in full precision and under the scheme** through :func:`circuitforge.quant.survival`
   (fast route: bitsandbytes round trip, checked against the real ``BitsAndBytesConfig`` load in the quant
   tests), per row, so the drops carry paired bootstrap 95% CIs (rows resampled, base and edited paired).
3. **Structural erasure** through :func:`circuitforge.cad.cad` on the first ``cad_rows`` forget rows (and
   as many retain rows, for its specificity and residual-basis checks) and the base circuit (given, or found
   with a :class:`~circuitforge.circuits.CircuitSearch`); the verdict comes from layer-hybrid recovery
   against a matched benign null (:mod:`circuitforge.cad.verdict`).
4. Optional extra tasks (targeted paraphrases, same-domain retain…) scored on both models in full precision.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from circuitforge.cad import CADResult, CADSettings, cad
from circuitforge.circuits import Circuit, CircuitSearch
from circuitforge.data import Task, evaluate
from circuitforge.data.scoring import choice_prompt
from circuitforge.errors import CircuitForgeError
from circuitforge.eval.base_reference import BaseReference
from circuitforge.eval.relearn import RelearnSettings
from circuitforge.eval.scorecard import Scorecard, Thresholds, judge
from circuitforge.eval.stats import mean_diff
from circuitforge.models import ModelHandle

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Assessment:
    """What :func:`assess` measured. ``scorecard.to_dict()`` is the ``circuitforge.verify/1`` JSON."""

    scorecard: Scorecard
    cad: CADResult
    survival: dict[str, Any]
    """:func:`circuitforge.quant.survival` table (fp and quantized accuracies of both models, per row)"""
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    """extra task name → ``{"base", "edited", "n", "sha256"}`` full-precision accuracies"""
    circuit: Circuit | None = None
    relearn: dict[str, Any] | None = None
    """the relearning attack when asked for (:func:`assess` ``relearn=``): :meth:`RelearnResult.to_dict` plus
    ``ci`` (95% bootstrap over held rows), the train/held task identities and what floors it"""

    @property
    def passed(self) -> bool:
        return self.scorecard.passed

    def reference(self) -> BaseReference:
        """What this assessment measured on the base model alone, for reuse (``verify --base-reference``)."""
        return BaseReference.of(self.scorecard.base, self.survival, self.extra, self.cad, self.relearn)


def context_length(handle: ModelHandle) -> int:
    """The longest sequence (tokens) the model accepts."""
    n = getattr(handle.bridge.cfg, "n_ctx", None) or getattr(handle.hf.config, "max_position_embeddings", None)
    if not n:
        raise CircuitForgeError(f"{handle.spec}: the model does not state its context length")
    return int(n)


def check_fits(handle: ModelHandle, task: Task, what: str) -> None:
    """Refuse a task whose longest prompt + answer option exceeds ``handle``'s context length."""
    limit = context_length(handle)
    for i, it in enumerate(task.items):
        if hasattr(it, "prompt"):
            texts = [it.prompt + o for o in (it.answer, *it.distractors)]  # type: ignore[union-attr]
        else:
            texts = [choice_prompt(it) + " A"]  # type: ignore[arg-type]
        n = max(len(handle.tokenizer(t)["input_ids"]) + 1 for t in texts)  # + BOS; to_tokens would truncate
        if n > limit:
            raise CircuitForgeError(f"{what} task {task.source or task.name}: row {i + 1} is {n} tokens long, "
                                    f"longer than {handle.spec}'s context of {limit} tokens")


def check_inputs(base: ModelHandle, edited: ModelHandle, tasks: Mapping[str, Task]) -> None:
    """Refuse incompatible models, non-finite weights, empty tasks and over-long prompts (one line each)."""
    from circuitforge.cad import check_compatible
    from circuitforge.models.loading import check_finite

    check_compatible(base, edited)
    check_finite(base)
    check_finite(edited)
    for what, t in tasks.items():
        if len(t) == 0:
            raise CircuitForgeError(f"{what} task {t.source or t.name}: no rows")
        check_fits(base, t, what)


def check_counterfactual(task: Task, what: str) -> None:
    """Refuse CAD rows without the corrupt prompt its counterfactual attribution patches from."""
    for i, it in enumerate(task.items):
        if getattr(it, "corrupt_prompt", None) is None:
            raise CircuitForgeError(f"{what} task {task.source or task.name}: row {i + 1} has no corrupt_prompt "
                                    "(CAD's counterfactual attribution needs one on every CAD row)")


def paired_drop_ci(base_correct: list[int], edited_correct: list[int], seed: int = 0) -> tuple[float, float]:
    """95% paired bootstrap CI of ``mean(base) − mean(edited)`` over rows (:func:`.stats.mean_diff`)."""
    est = mean_diff([base_correct], [edited_correct], seed=seed)
    if est.lo is None or est.hi is None:
        raise CircuitForgeError("cannot bootstrap an accuracy difference over zero rows")
    return est.lo, est.hi


def assess(
    base: ModelHandle,
    edited: ModelHandle,
    forget: Task,
    retain: Task,
    *,
    circuit: Circuit | None = None,
    search: CircuitSearch | None = None,
    scheme: str = "nf4",
    thresholds: Thresholds | None = None,
    cad_settings: CADSettings | None = None,
    cad_rows: int = 32,
    extra_tasks: Mapping[str, Task] | None = None,
    seed: int = 0,
    base_reference: "Assessment | BaseReference | None" = None,
    relearn: "RelearnSettings | None" = None,
    relearn_unknown: Task | None = None,
    progress: Progress | None = None,
) -> Assessment:
    """Score ``edited`` against ``base`` on the four properties (see module doc).

    Args:
        circuit: the base forget circuit; must have been found on ``base`` and the first ``cad_rows``
            forget rows (refused otherwise). ``None``: found with ``search`` (default ``CircuitSearch``
            on those rows).
        scheme: quantization scheme of the PTQ gap (``nf4``, ``fp4``, ``int8``, ``nf4-dq``…).
        extra_tasks: name → task, scored on both models in full precision (e.g. ``paraphrase``).
        seed: seeds the bootstrap CIs and CAD's null.
        base_reference: an earlier assessment (or its :class:`BaseReference`, e.g. read from a file): the
            base-model accuracies (fp, quantized, extra tasks) and M₀'s CAD edge attributions it holds are
            reused instead of recomputed where their keys match (weights, rows, scheme, edges, settings:
            sha256s compared); anything else is computed.
        relearn: also run the relearning attack (Deeb & Roger 2024; :mod:`circuitforge.eval.relearn`) with
            these settings: the forget rows split by fact (:func:`~circuitforge.eval.relearn.split_by_fact`),
            fine-tune on one half, recovery of the other half relative to the base model under the same
            attack, with a bootstrap CI — the direct test of whether the knowledge comes back, which CAD's
            verdict does not answer. ``relearn_unknown``: rows the base model never knew, the attack's floor
            (without them, gains from learning the format count as recovery).
    Raises:
        CircuitForgeError: bad input (see :func:`check_inputs`, :meth:`Circuit.check_found_on`).
    """
    from circuitforge.quant import Scheme
    from circuitforge.quant.survival import survival

    say = progress or (lambda s: None)
    th = thresholds or Thresholds()
    sch = Scheme.parse(scheme)
    extra_tasks = dict(extra_tasks or {})
    t0 = time.time()
    check_inputs(base, edited, {"forget": forget, "retain": retain, **extra_tasks})
    cad_task = forget.head(cad_rows)
    check_counterfactual(cad_task, "forget")
    if circuit is not None:
        circuit.check_found_on(base, cad_task, f"the {len(cad_task)} CAD rows of this run (--cad-rows)")
    say(f"accuracies in full precision and {sch.label}")
    ref = base_reference.reference() if isinstance(base_reference, Assessment) else base_reference
    if ref is not None and not ref.matches(base):
        ref = None
    if ref is not None:
        ref.install_cad_scores()
    surv = survival(base, edited, forget, retain, schemes=(sch,), base_reference=ref.survival if ref else None)
    fp_b, fp_e = surv["fp"]["base"], surv["fp"]["edited"]
    q = surv["schemes"][sch.label]
    extra = {}
    for name, t in extra_tasks.items():
        known = ref.extra_base(name, t.sha256) if ref is not None else None
        b = known if known is not None else evaluate(base, t).accuracy
        extra[name] = {"base": b, "edited": evaluate(edited, t).accuracy, "n": len(t), "sha256": t.sha256}
    say("circuit attribution divergence")
    cs = cad_settings or CADSettings(seed=seed)
    if circuit is None:
        circuit = (search or CircuitSearch(method=cs.method, ig_steps=cs.ig_steps, faithfulness=cs.faithfulness,
                                           rows=None)).find(base, cad_task)
    c = cad_step(base, edited, cad_task, retain, circuit, cs, cad_rows)
    rl_doc = None
    if relearn is not None:
        say("relearning attack")
        rl_doc = relearn_evidence(base, edited, forget, relearn, relearn_unknown, ref)
    values = {
        "forgetting": fp_b["forget_acc"] - fp_e["forget_acc"],
        "retain": fp_b["retain_acc"] - fp_e["retain_acc"],
        "ptq_gap": q["ptq_gap"],
    }
    cis = {
        "forgetting": paired_drop_ci(fp_b["forget_correct"], fp_e["forget_correct"], seed=seed),
        "retain": paired_drop_ci(fp_b["retain_correct"], fp_e["retain_correct"], seed=seed),
        # gap = quantized − fp accuracy of the edited model, paired over the same forget rows
        "ptq_gap": paired_drop_ci(q["edited"]["forget_correct"], fp_e["forget_correct"], seed=seed),
    }
    acc = {"base_forget": fp_b["forget_acc"], "base_retain": fp_b["retain_acc"],
           "unlearned_forget": fp_e["forget_acc"], "unlearned_retain": fp_e["retain_acc"],
           f"unlearned_forget_{sch.label}": q["edited"]["forget_acc"],
           f"unlearned_retain_{sch.label}": q["edited"]["retain_acc"],
           f"base_forget_{sch.label}": q["base"]["forget_acc"], f"base_retain_{sch.label}": q["base"]["retain_acc"]}
    for name, e in extra.items():
        acc[f"base_{name}"], acc[f"unlearned_{name}"] = e["base"], e["edited"]
    n = {"forgetting": len(forget), "retain": len(retain), "ptq_gap": len(forget), "structural_erasure": len(cad_task)}
    props = judge(values, c.summary(), th, cis=cis, n=n, scheme=sch.label)
    card = Scorecard(
        base=base.identity(), unlearned=edited.identity(), **props, cad=c.summary(), accuracies=acc,
        thresholds=th,
        tasks={"forget": forget.identity(), "retain": retain.identity(), "cad": cad_task.identity(),
               **{k: t.identity() for k, t in extra_tasks.items()}},
        seconds=time.time() - t0,
    )
    return Assessment(scorecard=card, cad=c, survival=surv, extra=extra, circuit=circuit, relearn=rl_doc)


def cad_step(base: ModelHandle, edited: ModelHandle, cad_task: Task, retain: Task, circuit: Circuit,
             settings: CADSettings, cad_rows: int) -> CADResult:
    """Step 3 of :func:`assess` on its own (also how ``circuitforge bench`` refreshes a cell's CAD evidence):
    :func:`circuitforge.cad.cad` on ``cad_task`` (the first ``cad_rows`` forget rows), with the first as many
    ``cad_rows`` retain rows as CAD's specificity and residual-basis rows when they are of the forget task's
    kind, and the retain rows after those as the benign fine-tune's training rows (all of them when fewer than
    8 are left)."""
    n = cad_rows
    # the retain rows give CAD its specificity and residual-basis checks (hybrids must still answer them)
    cad_retain = retain.head(n) if retain.kind == cad_task.kind else None
    # the benign fine-tune learns from retain rows CAD does not score (all of them when there are no others)
    rest = list(range(n, len(retain)))
    unrelated = retain.subset(rest, name=f"{retain.name}[{n}:]") if len(rest) >= 8 else retain
    return cad(base, edited, cad_task, circuit=circuit, settings=settings, retain=cad_retain, unrelated=unrelated)


def relearn_evidence(base: ModelHandle, edited: ModelHandle, forget: Task, settings: "RelearnSettings",
                     unknown: Task | None, ref: BaseReference | None) -> dict[str, Any]:
    """The relearning attack of :func:`assess` (``relearn=``): the base model's curve from ``ref`` when it
    holds one for these weights, halves and settings."""
    from circuitforge.eval.relearn import base_curve, recovery_ci, relearning_attack, split_by_fact

    train, held = split_by_fact(forget)
    curve = ref.relearn_curve(base.sha256, train.sha256, held.sha256, settings) if ref is not None else None
    if curve is None:
        curve = base_curve(base, train, held, settings)
    res = relearning_attack(None, edited, train, held, settings, unknown=unknown, base_attacked=curve)
    ci = recovery_ci(res, seed=settings.seed)
    return {**res.to_dict(), "ci": list(ci) if ci else None, "train": train.identity(), "held": held.identity(),
            "unknown": unknown.identity() if unknown is not None else None,
            "floor": "never-known rows" if unknown is not None else
            "none: no never-known rows were given, so gains from learning the format count as recovery"}
