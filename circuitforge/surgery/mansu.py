"""MANSU — Mechanistic-Aligned Null-Space Unlearning (arXiv 2605.15138): the loop.

The steps are separate functions in :mod:`~circuitforge.surgery.mansu_steps`; this module wires them:

1. circuit: a ``circuit=`` :class:`~circuitforge.circuits.Circuit` (its finest-resolution components,
   :func:`circuitforge.circuits.neurons.edit_nodes`), or ``circuit_nodes``, else the minimal faithful forget
   circuit found on the first ``circuit_rows`` forget rows — at ``circuit_level="neuron"`` (default) heads
   plus individual MLP neurons (:class:`~circuitforge.circuits.neurons.NeuronCircuitSearch`), at
   ``"node"`` heads plus whole MLPs (:class:`~circuitforge.circuits.CircuitSearch`). Its weight slices —
   a neuron's gate/up rows and down column, a head's q rows and o columns plus its KV group's k/v rows —
   minus the NF4 block-absmax weights are the mask ``M``;
2. once, at the base model: the retain inputs of every masked matrix (:func:`retain_inputs`) and, with
   ``move_cost="fisher"`` (default), the diagonal empirical Fisher of the retain rows (:func:`retain_fisher`);
3. per iteration: ``g = ∇F_forget ⊙ M``; candidate move of every not-yet-edited masked weight
   ``δ_i = −sign(g_i) · κ · binwidth_i`` (refused if it would reach the block absmax); forget gain
   ``G_i = −g_i δ_i > 0``; with ``retain_gradient_filter`` only moves whose first-order retain-NLL change
   ``∇NLL_retain · δ_i ≤ 0``; retain cost ``c_i`` of the single move (``½ F_i δ_i²``, or its output-change
   cost :func:`move_cost` with ``move_cost="output"``); the ``step_share · |M|`` best by ``G / (c + c̄)``; then per matrix the longest rank-ordered prefix whose
   *accumulated, applied* edit keeps the per-token relative retain-output change ``ρ ≤ max_output_change``
   (:func:`bounded_prefix`); apply; each weight is moved at most once, so its code change is never undone;
   if the measured retain NLL then rises by more than ``max_retain_nll_increase`` the iteration is rolled
   back exactly and retried with half as many moves (at most ``max_halvings`` times in a row);
4. stop when forget accuracy ≤ ``target_forget_acc`` (``forget_target_reached``); when no candidate fits
   the retain-output bound or the halvings are used up (``retain_budget_spent``); when no masked weight
   can move (``no_candidates``); or after ``max_steps`` iterations, rolled-back ones included
   (``max_steps``).

Afterwards the code flips are verified with the quantization module (``diagnostics["code_flips"]``) and the
retain-output change of every edited matrix under the final edit is reported
(``diagnostics["retain_output_change"]``, each ``≤ max_output_change`` by construction).
"""

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuitforge.circuits import Circuit
from circuitforge.data import Task, evaluate
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.models.weights import linear_weight_count
from circuitforge.quant import QuantizedMirror
from circuitforge.surgery._common import Run, check, check_literals, make_settings
from circuitforge.surgery.mansu_steps import (
    apply_floor_at,
    bounded_prefix,
    circuit_mask,
    exclude_absmax,
    forget_gradient,
    masked_index,
    move_cost,
    output_change,
    retain_fisher,
    retain_inputs,
    verify_code_flips,
)
from circuitforge.surgery.objectives import mean_answer_nll, reference_logprob
from circuitforge.surgery.result import UnlearnResult


@dataclass(frozen=True)
class MANSUSettings:
    """MANSU settings.

    Attributes:
        circuit_nodes: component ids to edit (``a{L}.h{H}``, ``a{L}.kv{G}``, ``m{L}``, ``m{L}.n{I}``);
            None: find the minimal faithful circuit (below).
        circuit_level: ``"neuron"`` (heads + MLP neurons) or ``"node"`` (heads + whole MLPs).
        circuit_budget: at ``circuit_level="neuron"``, the edit set is the heads and neurons with the largest
            |attribution| per weight within this share of the linear weights, its faithfulness measured
            and reported (:func:`~circuitforge.circuits.neurons.budget_neuron_circuit`); None: the minimal
            circuit reaching ``circuit_faithfulness`` (on SmolLM2-135M that circuit is 50% of the linear
            weights, so the default edits a budgeted part of it).
        circuit_faithfulness, circuit_method, circuit_ig_steps, circuit_rows: the circuit search on the
            first ``circuit_rows`` forget rows.
        circuit_contrast: λ ≥ 0. With λ > 0 (neuron level, budgeted edit set) units are ranked by their share
            of the forget |attribution| minus λ × their share of the retain |attribution| (``circuit_rows``
            retain rows evenly spaced over the retain set, which need counterfactual corrupt prompts), and units with a
            non-positive difference are never edited
            (:func:`~circuitforge.circuits.neurons.contrast_graph`): the edit set leaves out what the retain
            rows — e.g. untargeted facts of the forget domain — rely on as much as the forget rows. 0: the
            forget attribution alone.
        forget_loss: forget objective: ``margin`` (push the answer below its best distractor by
            ``margin`` nats), ``npo`` (β = ``beta``) or ``ga``.
        max_output_change: bound on every edited matrix's relative retain-output change
            ``sqrt(mean_t ‖Δx_t‖² / ‖Wx_t‖²)`` (per-token relative, retain tokens of the base model) under the applied edit.
        max_retain_nll_increase: measured retain-NLL increase that ends the run (None: not checked).
        retain_gradient_filter: drop every candidate move whose first-order retain-NLL change
            ``∇NLL_retain · δ`` is positive (one retain forward+backward per iteration). The output bound
            alone does not see direction: forget and retain rows share the question format, so the
            moves that best lower the forget answers also lower retain answers.
        max_halvings: after an iteration is rolled back, the same ranked moves are retried with half as
            many, at most this many times in a row (then ``retain_budget_spent``).
        move_cost: how a candidate move's retain cost ``c_i`` is measured for the ranking ``G_i / (c_i + c̄)``:
            ``"fisher"`` (default) its second-order retain-NLL cost ``½ F_i δ_i²`` with ``F`` the diagonal
            empirical Fisher of the retain rows at the base model
            (:func:`~circuitforge.surgery.mansu_steps.retain_fisher`, per-row gradients from batched backward passes);
            ``"output"`` its share of the matrix's relative retain-output change
            (:func:`~circuitforge.surgery.mansu_steps.move_cost`; the default before 2026-11-30). The output
            bound on the applied edit holds either way. On SmolLM2 (docs/surgery.md) Fisher ranking with
            ``step_share=0.001`` kept untargeted same-domain facts (held out of every retain set) at 0.88
            where the output cost with 1% steps stopped early at 0.78.
        kappa: κ > 1, moves are κ NF4 bin widths.
        step_share: at most this share of the mask is edited per iteration.
        max_steps: iterations at most. target_forget_acc: stop when forget accuracy ≤ this.
        stop_quantized: also require the forget accuracy of a fake-quantized copy (this scheme, pure-torch
            round trip, bit-exact with bitsandbytes) to be ≤ ``target_forget_acc`` before stopping
            (None: full precision only). Rows left just past the decision boundary otherwise come back
            when the *other* weights are rounded (tiny model: fp 0.25 → NF4 0.29 without it).
        gradient_at: where the forget gradient is taken: ``"full"`` (the full-precision weights) or
            ``"quantized"`` (a fake-quantized copy in the ``stop_quantized`` scheme, NF4 when that is None:
            the straight-through gradient of the model as it will be deployed; the moves still apply to the
            full-precision weights). Measured on SmolLM2 (docs/surgery.md): harmful — the retain protections
            are measured in full precision, so the NF4 model lost the domain (held-out same-domain 0.06 in NF4)
            while full precision stopped at 0.53 on the targets after 30 steps.
        forget_positions: ``"all"``, ``"subject"`` or ``"subject-mlp"``: the masked weights (``"subject-mlp"``:
            the masked MLP weights only; attention weights keep every position) collect the forget gradient only at each
            forget row's subject tokens (the prompt tokens its counterfactual ``corrupt_prompt`` changes;
            :mod:`~circuitforge.surgery.positions`). Facts are recalled from the subject's representation
            (ROME), which paraphrases of a fact share and other facts in its template do not. Measured on
            SmolLM2 (docs/surgery.md): untargeted same-domain facts all kept, but paraphrases barely move
            and much of the forgetting does not survive NF4.
        forget_rows: ``"all"`` or ``"recalled"``: the rows the forget gradient is taken over. With
            ``"recalled"`` each iteration uses only the forget rows still answered in full precision *or* in the
            ``stop_quantized`` copy (both already evaluated for the stop rule, so it costs nothing). With
            ``"all"`` rows forgotten long ago keep pulling (the softplus margin loss is never zero), which is
            how full precision overshoots while the rows that quantization brings back get no more push than
            any other. Measured on SmolLM2 (docs/surgery.md, two splits): NF4 gap +0.125 → +0.031 and
            +0.063 → −0.094, held-out same-domain facts as well or better kept, paraphrases no better.
        protect_counterfactuals: also protect the forget rows' counterfactual subjects: every forget row's
            ``corrupt_prompt`` → ``corrupt_answer`` (the same template about another subject, which
            attribution needs anyway) joins the retain rows the protections read — retain inputs, Fisher,
            retain-gradient filter, retain-NLL check, circuit contrast — unless it is itself a forget
            prompt, its answer is a forget answer, or it is a retain prompt already
            (:func:`counterfactual_retain`). Same-domain facts the user never listed, at no cost to them; the
            final retain accuracy is still reported on the given ``retain`` only.
        chunk_rows: rows per forward pass. blocksize: NF4 block size (bitsandbytes: 64).
    """

    circuit_nodes: tuple[str, ...] | None = None
    circuit_level: Literal["neuron", "node"] = "neuron"
    circuit_budget: float | None = 0.03
    circuit_faithfulness: float = 0.8
    circuit_method: Literal["eap-ig", "eap"] = "eap-ig"
    circuit_ig_steps: int = 3
    circuit_rows: int = 32
    circuit_contrast: float = 0.0
    forget_loss: Literal["margin", "npo", "ga"] = "margin"
    margin: float = 1.0
    beta: float = 0.1
    max_output_change: float = 0.05
    max_retain_nll_increase: float | None = 0.5
    retain_gradient_filter: bool = True
    max_halvings: int = 4
    move_cost: Literal["output", "fisher"] = "fisher"
    kappa: float = 1.1
    step_share: float = 0.001
    max_steps: int = 30
    target_forget_acc: float = 0.25
    stop_quantized: Literal["nf4", "fp4", "int8"] | None = "nf4"
    gradient_at: Literal["full", "quantized"] = "full"
    forget_positions: Literal["all", "subject", "subject-mlp"] = "all"
    forget_rows: Literal["all", "recalled"] = "all"
    protect_counterfactuals: bool = False
    chunk_rows: int = 16
    blocksize: int = 64

    def __post_init__(self) -> None:
        check_literals(self)
        check(self.circuit_nodes is None or len(self.circuit_nodes) > 0, "circuit_nodes must not be empty")
        check(0 < self.circuit_faithfulness <= 1, "circuit_faithfulness must be in (0, 1]")
        check(self.circuit_budget is None or 0 < self.circuit_budget <= 1, "circuit_budget must be in (0, 1] or None")
        check(self.circuit_ig_steps >= 1 and self.circuit_rows >= 1, "circuit_ig_steps and circuit_rows must be ≥ 1")
        check(self.circuit_contrast >= 0, "circuit_contrast must be ≥ 0")
        check(self.circuit_contrast == 0 or (self.circuit_level == "neuron" and self.circuit_budget is not None),
              "circuit_contrast needs circuit_level='neuron' and a circuit_budget")
        check(self.margin >= 0 and self.beta > 0, "margin must be ≥ 0 and beta > 0")
        check(self.max_output_change > 0, "max_output_change must be > 0")
        check(self.max_retain_nll_increase is None or self.max_retain_nll_increase > 0, "max_retain_nll_increase must be > 0")
        check(self.kappa > 1, "kappa must be > 1 (a move of exactly one bin width may land on a boundary)")
        check(0 < self.step_share <= 1, "step_share must be in (0, 1]")
        check(self.max_steps >= 1, "max_steps must be ≥ 1")
        check(self.max_halvings >= 0, "max_halvings must be ≥ 0")
        check(0 <= self.target_forget_acc <= 1, "target_forget_acc must be in [0, 1]")
        check(self.chunk_rows >= 1, "chunk_rows must be ≥ 1")
        check(self.stop_quantized in (None, "nf4", "fp4", "int8"), "stop_quantized must be nf4, fp4, int8 or None")
        check(self.blocksize >= 2, "blocksize must be ≥ 2")


Settings = MANSUSettings


def spread(task: Task, n: int) -> Task:
    """``n`` rows of ``task`` evenly spaced over it (all rows when it has at most ``n``): a retain set made
    of parts — same-domain facts, then general ones — is sampled from every part."""
    if len(task) <= n:
        return task
    return task.subset([k * len(task) // n for k in range(n)])


def counterfactual_retain(forget: Task, retain: Task) -> Task:
    """The forget rows' counterfactual subjects as retain rows (``protect_counterfactuals``): per cloze forget
    row with a ``corrupt_prompt`` and ``corrupt_answer``, the row ``corrupt_prompt`` → ``corrupt_answer``
    (distractors: the forget row's answer and distractors other than that answer), once per prompt, left out
    when the prompt is a forget or ``retain`` prompt or the answer is a forget answer (protecting it would
    pull against forgetting). Neither input is changed; the result may be empty."""
    from circuitforge.data.task import ClozeItem

    forget_prompts = {it.prompt for it in forget.items if isinstance(it, ClozeItem)}
    forget_answers = {it.answer.strip() for it in forget.items if isinstance(it, ClozeItem)}
    retain_prompts = {it.prompt for it in retain.items if isinstance(it, ClozeItem)}
    rows: list[ClozeItem] = []
    seen: set[str] = set()
    for it in forget.items:
        if not isinstance(it, ClozeItem) or not it.corrupt_prompt or not it.corrupt_answer:
            continue
        p, a = it.corrupt_prompt, it.corrupt_answer
        if p in seen or p in forget_prompts or p in retain_prompts or a.strip() in forget_answers:
            continue
        seen.add(p)
        rows.append(ClozeItem(p, a, tuple(x for x in (it.answer, *it.distractors) if x.strip() != a.strip())))
    return Task(f"{forget.name}[counterfactual subjects]", "cloze", tuple(rows), "counterfactual")


def find_circuit(handle: ModelHandle, forget: Task, s: MANSUSettings,
                 retain: Task | None = None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The forget circuit's (budgeted or minimal faithful) finest-resolution component ids and a summary of it
    (with ``s.circuit_contrast > 0``: contrasted against ``circuit_rows`` rows spread over ``retain``)."""
    from circuitforge.circuits import CircuitSearch
    from circuitforge.circuits.neurons import NeuronCircuitSearch, edit_nodes

    kw: dict[str, Any] = dict(method=s.circuit_method, ig_steps=s.circuit_ig_steps,
                              faithfulness=s.circuit_faithfulness, rows=s.circuit_rows)
    spec: Any = (NeuronCircuitSearch(**kw, max_weight_share=s.circuit_budget) if s.circuit_level == "neuron"
                 else CircuitSearch(**kw))
    if s.circuit_contrast > 0:
        if retain is None or len(retain) == 0:
            raise CircuitForgeError("circuit_contrast needs retain rows")
        c = spec.find(handle, forget, contrast=spread(retain, s.circuit_rows), contrast_weight=s.circuit_contrast)
    else:
        c = spec.find(handle, forget)
    nodes = tuple(edit_nodes(c))
    if not nodes:
        raise CircuitForgeError("the minimal circuit has no components to edit")
    info = {"source": "minimal_circuit", "level": s.circuit_level, "method": s.circuit_method,
            "faithfulness": c.faithfulness, "reached": c.reached, "message": c.message, "n_edges": c.n_edges,
            "curve": c.curve, "task": spec.task(forget).identity()}
    if s.circuit_level == "neuron":
        info.update(n_heads=c.selection["n_heads"], n_neurons=c.selection["n_neurons"],
                    neurons_per_layer=c.selection["neurons_per_layer"])
    if "contrast" in c.selection:
        info["contrast"] = c.selection["contrast"]
    return nodes, info


def _circuit(handle: ModelHandle, forget: Task, retain: Task, s: MANSUSettings, circuit: "Circuit | None",
             ) -> tuple[tuple[str, ...], dict[str, Any]]:
    if circuit is not None:
        from circuitforge.circuits.neurons import edit_nodes, is_neuron_circuit

        nodes = tuple(edit_nodes(circuit))
        return nodes, {"source": "given circuit", "level": "neuron" if is_neuron_circuit(circuit) else "node",
                       "faithfulness": circuit.faithfulness, "message": circuit.message, "n_edges": circuit.n_edges}
    if s.circuit_nodes is not None:
        return tuple(s.circuit_nodes), {"source": "circuit_nodes setting"}
    return find_circuit(handle, forget, s, retain)


def _rank(e: ModelHandle, at: ModelHandle, forget: Task, retain: Task, rows: list[int], mask: dict[str, torch.Tensor],
          idx: dict[str, torch.Tensor], edited: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter],
          names: list[str], inp: Any, s: MANSUSettings, ref_lp: torch.Tensor | None,
          fisher: dict[str, torch.Tensor] | None) -> tuple[float, dict[str, torch.Tensor], torch.Tensor, int, int]:
    """One iteration's ranking over the masked entries ``idx`` (:func:`masked_index`): ``(forget loss,
    candidate moves [k] per matrix, flat gain ÷ cost ratios in ``names`` order, number of candidates, gradient
    rows)``. ``edited``: [k] per matrix, the entries already moved. A function of its own so that the
    gradients it builds are freed before the moves are applied and the next gradient is taken."""
    pull = forget if len(rows) == len(forget) else forget.subset(rows, f"{forget.name}[recalled]")
    floss, grads = forget_gradient(at, pull, mask, s.forget_loss, margin=s.margin, beta=s.beta,
                                   ref_logprob=None if ref_lp is None else ref_lp[rows],
                                   chunk=s.chunk_rows, positions=s.forget_positions, at=idx)
    free = {n: ~edited[n] for n in names}
    rgrads = None
    if s.retain_gradient_filter:  # ∇ of −NLL_retain ("ga" objective), negated in place: ∇ NLL_retain
        rgrads = {n: g.neg_() for n, g in forget_gradient(e, retain, mask, "ga", chunk=s.chunk_rows, at=idx)[1].items()}
    moves, flat = _ranked_candidates(params, idx, grads, free, inp, s, rgrads, fisher, names)
    return floss, moves, flat, int((flat > float("-inf")).sum()), len(rows)


def _ranked_candidates(params: dict[str, torch.nn.Parameter], idx: dict[str, torch.Tensor],
                       grads: dict[str, torch.Tensor], free: dict[str, torch.Tensor], inp: Any, s: MANSUSettings,
                       retain_grads: dict[str, torch.Tensor] | None, fisher: dict[str, torch.Tensor] | None,
                       names: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """At the masked entries ``idx[n]`` of every matrix (``grads``, ``free``, ``retain_grads``, ``fisher``:
    ``[k]`` there): the floored candidate moves (zero where not a candidate); and the gain ÷ cost ratio of
    every entry (−inf where not a candidate), the matrices' ratios one after another in ``names`` order.
    With ``retain_grads`` (gradient of the retain answer NLL) a move whose first-order retain-NLL change
    ``∇NLL_retain · δ`` is positive is not a candidate. With ``fisher`` the cost is ``½ F δ²`` instead of the
    output-change cost. Two passes (the moves and the mean candidate cost, then the ratios) so that no gain
    or cost of every matrix is held at once."""
    def cost(n: str, mv: torch.Tensor) -> torch.Tensor:
        if fisher is not None:
            return 0.5 * fisher[n] * mv.float() ** 2
        return move_cost(inp, n, idx[n], params[n].shape[1], mv)

    moves = {}
    total, count = 0.0, 0
    for n in params:   # the mean cost summed in the parameters' order
        g = grads[n].cpu()
        w = params[n].detach().cpu()
        mv = apply_floor_at(w, idx[n], -g * free[n], s.kappa, 0.0, s.blocksize)
        ok = (mv != 0) & (-(g * mv) > 0)
        if retain_grads is not None:
            ok &= retain_grads[n].cpu() * mv <= 0
        moves[n] = torch.where(ok, mv, torch.zeros_like(mv))
        total += float(cost(n, moves[n])[ok].double().sum())
        count += int(ok.sum())
    floor = total / max(count, 1)  # mean single-move cost of this step's candidates
    flat = torch.empty(sum(len(idx[n]) for n in names))
    off = 0
    for n in names:
        gain = -(grads[n].cpu() * moves[n])   # > 0 exactly at the candidates (moves are 0 elsewhere)
        k = gain.numel()
        flat[off:off + k] = torch.where(gain > 0, gain / (cost(n, moves[n]) + floor + 1e-30),
                                        torch.full_like(gain, float("-inf")))
        off += k
    return moves, flat


def _forget_acc(e: ModelHandle, forget: Task, s: MANSUSettings, mirror: QuantizedMirror | None,
                dirty: set[str]) -> tuple[float, dict[str, float], list[int]]:
    """The forget accuracy the stopping rule reads (with ``stop_quantized``: the larger of full precision
    and the quantized ``mirror``, refreshed first on the ``dirty`` weights), both numbers for the history,
    and the rows still recalled by either."""
    fp = evaluate(e, forget)
    if mirror is None:
        return fp.accuracy, {"forget_acc": fp.accuracy}, [i for i, c in enumerate(fp.correct) if c]
    q = evaluate(_refreshed(mirror, dirty), forget)
    recalled = [i for i, (a, b) in enumerate(zip(fp.correct, q.correct, strict=True)) if a or b]
    return max(fp.accuracy, q.accuracy), {"forget_acc": fp.accuracy, f"forget_acc_{s.stop_quantized}": q.accuracy}, recalled


def _refreshed(mirror: QuantizedMirror, dirty: set[str]) -> ModelHandle:
    """The fake-quantized copy of the edited model, its ``dirty`` weights re-quantized (then marked clean)."""
    h = mirror.refresh(sorted(dirty))
    dirty.clear()
    return h


class _Clock:
    """Wall seconds per phase of a run, summed over its iterations (``diagnostics["seconds"]``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._t
        self._t = now


def run(handle: ModelHandle, forget: Task, retain: Task, *, seed: int = 0, circuit: "Circuit | None" = None,
        **settings: Any) -> UnlearnResult:
    """MANSU on ``forget`` / ``retain`` (see the module docstring). ``circuit`` may be a
    :class:`~circuitforge.circuits.Circuit` whose components are edited (recorded as ``circuit_nodes``).
    Deterministic: no random choices are made (``seed`` is recorded)."""
    if circuit is not None and not hasattr(circuit, "nodes"):
        raise CircuitForgeError("circuit must be a circuitforge Circuit (with .nodes)")
    s = make_settings(MANSUSettings, **settings)
    r = Run.start(handle)
    e = r.edited
    clock = _Clock()
    given_retain = retain
    n_counterfactual = 0
    if s.protect_counterfactuals:   # the protections read the given rows plus the counterfactual subjects
        if retain.kind != "cloze":
            raise CircuitForgeError("protect_counterfactuals needs a cloze retain task (prompt + answer rows)")
        extra = counterfactual_retain(forget, retain)
        n_counterfactual = len(extra)
        if n_counterfactual:
            retain = Task(f"{retain.name} + {extra.name}", "cloze", retain.items + extra.items, "mansu")
    nodes, circ_info = _circuit(e, forget, retain, s, circuit)
    clock.lap("circuit")
    if circuit is not None:
        s = make_settings(MANSUSettings, **{**settings, "circuit_nodes": nodes})
    mask, units = circuit_mask(e, nodes)
    mask, n_absmax = exclude_absmax(e, mask, s.blocksize)
    params = {n: p for n, p in e.named_parameters().items() if n in mask}
    n_mask = int(sum(int(m.sum()) for m in mask.values()))
    n_linear = linear_weight_count(e)
    clock.lap("mask")
    inp = retain_inputs(e, retain, mask, s.chunk_rows)
    clock.lap("retain_inputs")
    idx = masked_index(mask)   # per-weight quantities are kept at the masked entries only
    fisher = retain_fisher(e, retain, mask, at=idx, chunk=s.chunk_rows) if s.move_cost == "fisher" else None
    clock.lap("retain_fisher")
    ref_lp = reference_logprob(handle, forget, s.chunk_rows) if s.forget_loss == "npo" else None
    edited = {n: torch.zeros(len(i), dtype=torch.bool) for n, i in idx.items()}   # [k]: moved already
    per_step = max(1, math.ceil(s.step_share * n_mask))
    base_retain = mean_answer_nll(e, retain, s.chunk_rows)
    # the quantized copy (stop rule, gradient_at="quantized") is built once; edited matrices are re-quantized
    need_q = s.stop_quantized is not None or s.gradient_at == "quantized"
    mirror = QuantizedMirror(e, s.stop_quantized or "nf4", backend="torch") if need_q else None
    dirty: set[str] = set()
    stop_mirror = mirror if s.stop_quantized is not None else None
    clock.lap("setup")
    acc, accs, recalled = _forget_acc(e, forget, s, stop_mirror, dirty)
    clock.lap("stop_rule_eval")
    history: list[dict[str, Any]] = [{"step": 0, **accs, "retain_nll": base_retain, "n_edited": 0}]
    stop = "max_steps"
    names = sorted(params)
    size = per_step  # moves tried this iteration: halved after a rolled-back iteration (backtracking)
    ranked: tuple[float, dict[str, torch.Tensor], torch.Tensor, int, int] | None = None  # reused after a rollback
    for step in range(1, s.max_steps + 1):
        if acc <= s.target_forget_acc:
            stop = "forget_target_reached"
            break
        if ranked is None:
            at = e if mirror is None or s.gradient_at == "full" else _refreshed(mirror, dirty)
            rows = recalled if s.forget_rows == "recalled" else list(range(len(forget)))
            ranked = _rank(e, at, forget, retain, rows, mask, idx, edited, params, names, inp, s, ref_lp, fisher)
            clock.lap("gradients_and_ranking")
        floss, moves, flat, n_ok, n_pull = ranked
        if n_ok == 0:
            stop = "no_candidates"
            break
        top = torch.topk(flat, min(size, n_ok)).indices  # rank order, best first
        applied: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # name → (entries, flat indices, moves)
        offset = 0
        bound_cut = 0
        for n in names:
            k = moves[n].numel()
            sel = top[(top >= offset) & (top < offset + k)] - offset   # masked entries, in rank order
            offset += k
            if len(sel) == 0:
                continue
            at_w, vals = idx[n][sel], moves[n][sel]
            done = (params[n].detach().cpu() - r.base_state[n]).float()
            p = bounded_prefix(inp, n, done, at_w, vals, s.max_output_change)
            bound_cut += len(sel) - p
            if p:
                applied[n] = (sel[:p], at_w[:p], vals[:p])
        if not applied:
            history.append({"step": step, "forget_loss": floss, "candidates": n_ok, "cut_by_output_bound": bound_cut})
            stop = "retain_budget_spent"
            break
        with torch.no_grad():
            for n, (_, at_w, vals) in applied.items():
                w = params[n].view(-1)
                dev = at_w.to(w.device)
                w[dev] = w[dev] + vals.to(w.device, w.dtype)
        dirty |= set(applied)  # re-quantized at the next read, whether this iteration stays or is rolled back
        clock.lap("output_bound_and_apply")
        retain_nll = mean_answer_nll(e, retain, s.chunk_rows)
        clock.lap("retain_nll_check")
        if s.max_retain_nll_increase is not None and retain_nll - base_retain > s.max_retain_nll_increase:
            with torch.no_grad():  # roll the iteration back exactly
                for n, (_, at_w, _) in applied.items():
                    w = params[n].view(-1)
                    w[at_w.to(w.device)] = r.base_state[n].view(-1)[at_w].to(w.device, w.dtype)
            history.append({"step": step, "forget_loss": floss, "retain_nll": retain_nll, "rolled_back": 1.0,
                            "tried": int(sum(len(a[0]) for a in applied.values()))})
            size //= 2  # backtrack: the same ranking, half as many moves (weights are bit-identical again)
            if size < max(1, per_step // 2 ** s.max_halvings):
                stop = "retain_budget_spent"
                break
            continue
        ranked = None
        for n, (sel, _, _) in applied.items():
            edited[n][sel] = True
        acc, accs, recalled = _forget_acc(e, forget, s, stop_mirror, dirty)
        clock.lap("stop_rule_eval")
        history.append({"step": step, "forget_loss": floss, **accs, "retain_nll": retain_nll,
                        "candidates": n_ok, "gradient_rows": n_pull,
                        "applied": int(sum(len(a[0]) for a in applied.values())),
                        "cut_by_output_bound": bound_cut,
                        "n_edited": int(sum(int(x.sum()) for x in edited.values()))})
    else:
        if acc <= s.target_forget_acc:
            stop = "forget_target_reached"
    touched = [n for n in names if bool(edited[n].any())]
    flips = verify_code_flips(r.base_state, e, touched, s.blocksize)
    change = {n: output_change(inp, n, params[n].detach().cpu() - r.base_state[n]) for n in touched}
    n_edited = int(sum(int(x.sum()) for x in edited.values()))
    diag = {
        "circuit": {"nodes": list(nodes), **circ_info},
        "mask": {"n_mask": n_mask, "n_absmax_excluded": n_absmax, "n_units": len(units), "matrices": sorted(mask),
                 "n_linear": n_linear, "mask_share_linear": n_mask / n_linear, "edited_share_linear": n_edited / n_linear},
        "retain_tokens": inp.n_tokens,
        "counterfactual_retain_rows": n_counterfactual,
        "retain_nll_base": base_retain, "retain_nll_final": mean_answer_nll(e, retain, s.chunk_rows),
        "edits_per_step_max": per_step,
        "code_flips": flips,
        "retain_output_change": change,
        "retain_output_change_max": max(change.values(), default=0.0),
        "retain_output_bound": s.max_output_change,
    }
    clock.lap("final_checks")
    diag["seconds"] = clock.seconds
    return r.finish("mansu", s, seed, forget, given_retain, history, stop, mask=mask, diagnostics=diag)
