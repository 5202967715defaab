"""MANSU — Mechanistic-Aligned Null-Space Unlearning (arXiv 2605.15138): the loop.

The steps are separate functions in :mod:`~circuitforge.surgery.mansu_steps`; this module wires them:

1. circuit: ``circuit_nodes`` (or a ``circuit=`` :class:`~circuitforge.circuits.Circuit`), else the
   minimal faithful forget circuit found with EAP-IG on the first ``circuit_rows`` forget rows
   (:func:`circuitforge.circuits.minimal_circuit`); its weight slices minus the NF4 block-absmax weights
   are the mask ``M``;
2. once, at the base model: the retain null-space projector of every edit unit and the diagonal
   Fisher ``F`` of the retain loss;
3. per iteration: ``g = ∇F_forget ⊙ M``; direction ``d = −Π(g)`` (per unit ``−g P``); candidate move of
   every not-yet-edited masked weight ``δ_i = sign(d_i) · κ · binwidth_i`` (refused if it would reach the
   block absmax); forget gain ``G_i = d_i δ_i`` (along the null-space direction), kept only when the raw
   first-order gain ``−g_i δ_i`` is positive too; cost ``½ F_ii δ_i²``; greedy selection by ``G / cost``
   under the remaining budget and at most ``step_share`` of the mask per iteration; apply; each weight is
   moved at most once, so its code change is never undone;
4. stop when forget accuracy ≤ ``target_forget_acc`` (``forget_target_reached``), when no candidate fits
   the remaining Fisher budget or the measured retain NLL rises by more than
   ``max_retain_nll_increase`` (the offending iteration is rolled back) (``retain_budget_spent``), when
   no candidate has a positive gain (``no_candidates``), or after ``max_steps`` (``max_steps``).

Afterwards the code flips are verified with the quantization module (``diagnostics["code_flips"]``) and
the first-order retain output change of every edited matrix is reported
(``diagnostics["retain_output_change"]``: ``‖Δ x‖ / ‖W x‖`` over the retain inputs). The sparse,
floored moves are not exactly in the null space — the projection picks directions and signs, the
Fisher budget and the measured retain NLL bound the damage.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuitforge.data import Task, evaluate
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.surgery._common import Run, check, check_literals, make_settings
from circuitforge.surgery.mansu_steps import (
    EditUnit,
    apply_floor,
    circuit_mask,
    diagonal_fisher,
    exclude_absmax,
    forget_gradient,
    nullspace_projector,
    project,
    retain_second_moments,
    select_under_budget,
    verify_code_flips,
)
from circuitforge.surgery.objectives import mean_answer_nll, reference_logprob
from circuitforge.surgery.result import UnlearnResult


@dataclass(frozen=True)
class MANSUSettings:
    """MANSU settings.

    Attributes:
        circuit_nodes: component ids to edit; None: find the minimal faithful circuit (below).
        circuit_faithfulness, circuit_method, circuit_ig_steps, circuit_rows: the circuit search
            (:func:`~circuitforge.circuits.minimal_circuit` on the first ``circuit_rows`` forget rows).
        forget_loss: forget objective: ``margin`` (push the answer below its best distractor by
            ``margin`` nats), ``npo`` (β = ``beta``) or ``ga``.
        null_threshold: τ, keep input directions with eigenvalue ≤ τ · λ_max.
        retain_budget: ε, total Fisher-predicted retain-loss increase allowed (nats per answer token).
        max_retain_nll_increase: measured retain-NLL increase that ends the run (None: not checked).
        kappa: κ > 1, moves are κ NF4 bin widths.
        step_share: at most this share of the mask is edited per iteration.
        max_steps: iterations at most. target_forget_acc: stop when forget accuracy ≤ this.
        fisher_batch_size, fisher_rows: diagonal Fisher estimation (see ``diagonal_fisher``).
        chunk_rows: rows per forward pass. blocksize: NF4 block size (bitsandbytes: 64).
    """

    circuit_nodes: tuple[str, ...] | None = None
    circuit_faithfulness: float = 0.8
    circuit_method: Literal["eap-ig", "eap"] = "eap-ig"
    circuit_ig_steps: int = 3
    circuit_rows: int = 32
    forget_loss: Literal["margin", "npo", "ga"] = "margin"
    margin: float = 1.0
    beta: float = 0.1
    null_threshold: float = 1e-3
    retain_budget: float = 0.1
    max_retain_nll_increase: float | None = 0.5
    kappa: float = 1.1
    step_share: float = 0.02
    max_steps: int = 30
    target_forget_acc: float = 0.25
    fisher_batch_size: int = 1
    fisher_rows: int | None = None
    chunk_rows: int = 16
    blocksize: int = 64

    def __post_init__(self) -> None:
        check_literals(self)
        check(self.circuit_nodes is None or len(self.circuit_nodes) > 0, "circuit_nodes must not be empty")
        check(0 < self.circuit_faithfulness <= 1.5, "circuit_faithfulness must be in (0, 1.5]")
        check(self.circuit_ig_steps >= 1 and self.circuit_rows >= 1, "circuit_ig_steps and circuit_rows must be ≥ 1")
        check(self.margin >= 0 and self.beta > 0, "margin must be ≥ 0 and beta > 0")
        check(0 <= self.null_threshold <= 1, "null_threshold must be in [0, 1]")
        check(self.retain_budget > 0, "retain_budget must be > 0")
        check(self.max_retain_nll_increase is None or self.max_retain_nll_increase > 0, "max_retain_nll_increase must be > 0")
        check(self.kappa > 1, "kappa must be > 1 (a move of exactly one bin width may land on a boundary)")
        check(0 < self.step_share <= 1, "step_share must be in (0, 1]")
        check(self.max_steps >= 1, "max_steps must be ≥ 1")
        check(0 <= self.target_forget_acc <= 1, "target_forget_acc must be in [0, 1]")
        check(self.fisher_batch_size >= 1 and self.chunk_rows >= 1, "batch sizes must be ≥ 1")
        check(self.fisher_rows is None or self.fisher_rows >= 1, "fisher_rows must be ≥ 1")
        check(self.blocksize >= 2, "blocksize must be ≥ 2")


Settings = MANSUSettings


def find_circuit(handle: ModelHandle, forget: Task, s: MANSUSettings) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The minimal faithful forget circuit's component ids (EAP-IG by default) and a summary of it."""
    from circuitforge.circuits import minimal_circuit

    task = forget.head(s.circuit_rows)
    kw: dict[str, Any] = {"ig_steps": s.circuit_ig_steps} if s.circuit_method == "eap-ig" else {}
    c = minimal_circuit(handle, task, faithfulness=s.circuit_faithfulness, method=s.circuit_method,
                        baselines=False, **kw)
    nodes = tuple(sorted(c.nodes))
    if not nodes:
        raise CircuitForgeError("the minimal circuit has no components to edit")
    return nodes, {"source": "minimal_circuit", "method": s.circuit_method, "faithfulness": c.faithfulness,
                   "reached": c.reached, "message": c.message, "n_edges": c.n_edges, "task": task.identity()}


def _circuit(handle: ModelHandle, forget: Task, s: MANSUSettings, circuit: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    if circuit is not None:
        nodes = tuple(sorted(circuit.nodes))
        return nodes, {"source": "given circuit", "faithfulness": circuit.faithfulness, "message": circuit.message,
                       "n_edges": circuit.n_edges}
    if s.circuit_nodes is not None:
        return tuple(s.circuit_nodes), {"source": "circuit_nodes setting"}
    return find_circuit(handle, forget, s)


def _output_change(units: list[EditUnit], moments: dict[Any, torch.Tensor], base: dict[str, torch.Tensor],
                   params: dict[str, torch.nn.Parameter]) -> dict[str, float]:
    """Per matrix: ``sqrt(Σ_units tr(Δ C Δᵀ) / Σ_units tr(W C Wᵀ))`` — relative change of its retain outputs."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for u in units:
        w0 = base[u.name][u.rows, u.cols].double()
        d = params[u.name].detach().cpu()[u.rows, u.cols].double() - w0
        c = moments[u.key]
        num[u.name] = num.get(u.name, 0.0) + float(torch.einsum("ri,ij,rj->", d, c, d))
        den[u.name] = den.get(u.name, 0.0) + float(torch.einsum("ri,ij,rj->", w0, c, w0))
    return {n: math.sqrt(num[n] / den[n]) if den[n] > 0 else 0.0 for n in num if num[n] > 0}


def run(handle: ModelHandle, forget: Task, retain: Task, *, seed: int = 0, circuit: Any = None,
        **settings: Any) -> UnlearnResult:
    """MANSU on ``forget`` / ``retain`` (see the module docstring). ``circuit`` may be a
    :class:`~circuitforge.circuits.Circuit` whose nodes are used (recorded as ``circuit_nodes``).
    Deterministic: no random choices are made (``seed`` is recorded)."""
    if circuit is not None and not hasattr(circuit, "nodes"):
        raise CircuitForgeError("circuit must be a circuitforge Circuit (with .nodes)")
    s = make_settings(MANSUSettings, **settings)
    r = Run.start(handle)
    e = r.edited
    nodes, circ_info = _circuit(e, forget, s, circuit)
    if circuit is not None:
        s = make_settings(MANSUSettings, **{**settings, "circuit_nodes": nodes})
    mask, units = circuit_mask(e, nodes)
    mask, n_absmax = exclude_absmax(e, mask, s.blocksize)
    params = {n: p for n, p in e.named_parameters().items() if n in mask}
    n_mask = int(sum(int(m.sum()) for m in mask.values()))
    moments, n_tok = retain_second_moments(e, retain, units, s.chunk_rows)
    projectors = {k: nullspace_projector(c, s.null_threshold) for k, c in moments.items()}
    null_dims = {f"{k[0]}[{k[1]}:{k[2]}]": int(round(float(torch.trace(p)))) for k, p in projectors.items()}
    fisher = diagonal_fisher(e, retain, mask, s.fisher_batch_size, s.fisher_rows)
    ref_lp = reference_logprob(handle, forget, s.chunk_rows) if s.forget_loss == "npo" else None
    edited = {n: torch.zeros_like(m) for n, m in mask.items()}
    per_step = max(1, math.ceil(s.step_share * n_mask))
    base_retain = mean_answer_nll(e, retain, s.chunk_rows)
    acc = evaluate(e, forget).accuracy
    history: list[dict[str, Any]] = [{"step": 0, "forget_acc": acc, "retain_nll": base_retain, "n_edited": 0}]
    spent, stop = 0.0, "max_steps"
    names = list(params)
    for step in range(1, s.max_steps + 1):
        if acc <= s.target_forget_acc:
            stop = "forget_target_reached"
            break
        floss, grads = forget_gradient(e, forget, mask, s.forget_loss, margin=s.margin, beta=s.beta,
                                       ref_logprob=ref_lp, chunk=s.chunk_rows)
        moves, gains, costs = {}, [], []
        for n in names:
            direction = torch.zeros_like(grads[n])
            for u in (u for u in units if u.name == n):
                direction[u.rows, u.cols] = -project(grads[n][u.rows, u.cols], projectors[u.key])
            direction = direction * (mask[n] & ~edited[n])
            mv = apply_floor(params[n].detach(), direction, s.kappa, 0.0, s.blocksize)
            raw_gain = -(grads[n] * mv)
            gain = torch.where(raw_gain > 0, direction * mv, torch.zeros_like(mv))
            moves[n] = mv
            gains.append(gain.reshape(-1))
            costs.append((0.5 * fisher[n] * mv**2).reshape(-1))
        gain_all, cost_all = torch.cat(gains), torch.cat(costs)
        if not bool((gain_all > 0).any()):
            stop = "no_candidates"
            break
        sel = select_under_budget(gain_all, cost_all, s.retain_budget - spent, per_step)
        if not bool(sel.any()):
            stop = "retain_budget_spent"
            break
        step_cost = float(cost_all[sel].double().sum())
        applied: dict[str, torch.Tensor] = {}
        offset = 0
        with torch.no_grad():
            for n in names:
                k = moves[n].numel()
                pick = sel[offset : offset + k].reshape(moves[n].shape)
                offset += k
                if pick.any():
                    delta = torch.where(pick, moves[n], torch.zeros_like(moves[n]))
                    params[n].add_(delta.to(params[n].device, params[n].dtype))
                    applied[n] = pick
        retain_nll = mean_answer_nll(e, retain, s.chunk_rows)
        if s.max_retain_nll_increase is not None and retain_nll - base_retain > s.max_retain_nll_increase:
            with torch.no_grad():  # roll the iteration back exactly
                for n, pick in applied.items():
                    params[n].copy_(torch.where(pick.to(params[n].device), r.base_state[n].to(params[n].device), params[n]))
            history.append({"step": step, "forget_loss": floss, "retain_nll": retain_nll, "rolled_back": 1.0})
            stop = "retain_budget_spent"
            break
        for n, pick in applied.items():
            edited[n] |= pick
        spent += step_cost
        acc = evaluate(e, forget).accuracy
        history.append({"step": step, "forget_loss": floss, "forget_acc": acc, "retain_nll": retain_nll,
                        "fisher_spent": spent, "n_edited": int(sum(int(x.sum()) for x in edited.values()))})
    else:
        if acc <= s.target_forget_acc:
            stop = "forget_target_reached"
    flips = verify_code_flips(r.base_state, e, [n for n in names if bool(edited[n].any())], s.blocksize)
    diag = {
        "circuit": {"nodes": list(nodes), **circ_info},
        "mask": {"n_mask": n_mask, "n_absmax_excluded": n_absmax, "n_units": len(units),
                 "matrices": sorted(mask)},
        "null_space": {"threshold": s.null_threshold, "retain_tokens": n_tok, "null_dims": null_dims},
        "fisher_budget": s.retain_budget, "fisher_spent": spent,
        "retain_nll_base": base_retain, "retain_nll_final": mean_answer_nll(e, retain, s.chunk_rows),
        "edits_per_step_max": per_step,
        "code_flips": flips,
        "retain_output_change": _output_change(units, moments, r.base_state, params),
    }
    return r.finish("mansu", s, seed, forget, retain, history, stop, mask=mask, diagnostics=diag)
