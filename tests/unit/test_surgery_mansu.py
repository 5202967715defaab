"""MANSU on tiny-facts: exact mask, NF4 code flips, null-space projection, budgeted selection, floor,
determinism, and the input handle left alone."""

import pytest
import torch

from circuitforge.errors import CircuitForgeError
from circuitforge.quant import block_absmax, code_index, diff_report
from circuitforge.surgery import unlearn
from circuitforge.surgery.mansu_steps import (
    apply_floor,
    circuit_mask,
    exclude_absmax,
    forget_gradient,
    nullspace_projector,
    project,
    retain_second_moments,
    select_under_budget,
)
from circuitforge.surgery.objectives import answer_batch

NODES = ("a0.h0", "a0.kv0", "m0", "m3")


@pytest.fixture(scope="module")
def mansu(tiny_facts, forget_task, retain_task):
    """One MANSU run with the default circuit source (minimal EAP-IG circuit)."""
    return unlearn(tiny_facts, forget_task, retain_task, method="mansu", seed=0)


def test_mansu_forgets_and_reports(mansu):
    fin = mansu.diagnostics["final"]
    assert mansu.stop_reason in ("forget_target_reached", "retain_budget_spent", "max_steps", "no_candidates")
    assert fin["forget_acc"] <= 0.5, mansu.loss_history[-3:]
    assert fin["retain_acc"] >= 0.9
    assert mansu.diagnostics["circuit"]["source"] == "minimal_circuit"
    assert mansu.diagnostics["circuit"]["method"] == "eap-ig"
    assert 0 < mansu.mask_stats["n_changed"] < mansu.mask_stats["n_mask"]  # sparse


def test_mansu_changes_nothing_outside_the_mask(mansu, tiny_facts):
    mask, _ = circuit_mask(tiny_facts, mansu.diagnostics["circuit"]["nodes"])
    mask, _ = exclude_absmax(tiny_facts, mask)
    base, edited = tiny_facts.named_parameters(), mansu.handle.named_parameters()
    n_changed = 0
    for name, p in base.items():
        diff = p.detach() != edited[name].detach()
        m = mask.get(name, torch.zeros_like(diff))
        assert not (diff & ~m).any(), name
        n_changed += int(diff.sum())
    assert n_changed == mansu.mask_stats["n_changed"] > 0
    assert mansu.mask_stats["n_changed_outside_mask"] == 0


def test_mansu_flips_nf4_codes(mansu, tiny_facts):
    rep = diff_report(tiny_facts, mansu.handle, "nf4", per_tensor=False)
    assert rep["n_changed"] == mansu.mask_stats["n_changed"]
    assert rep["code_flip_rate"] >= 0.99
    assert rep["n_absmax_changed_blocks"] == 0
    assert rep["median_binwidth_to_update_ratio"] < 1.0
    own = mansu.diagnostics["code_flips"]
    assert own["code_flip_rate"] >= 0.99 and own["collateral_code_changes"] == 0


def test_nullspace_projection_keeps_retain_outputs(tiny_facts, forget_task, retain_task):
    """(W + ΔP) x == W x on the real retain inputs of every edited matrix, to 1e-4 relative, while the
    unprojected Δ (same norm as W) moves them a lot."""
    mask, units = circuit_mask(tiny_facts, NODES)
    moments, _ = retain_second_moments(tiny_facts, retain_task, units)
    _, grads = forget_gradient(tiny_facts, forget_task.head(8), mask)
    mods = {n.replace("._original_component", ""): m for n, m in tiny_facts.hf.named_modules()
            if isinstance(m, torch.nn.Linear)}
    xs: dict[str, list[torch.Tensor]] = {}
    state: dict[str, torch.Tensor] = {}
    hooks = [mods[u.module].register_forward_pre_hook(
        lambda mod, a, k=u.module: xs.setdefault(k, []).append(a[0].detach()[state["valid"]])) for u in {u.module: u for u in units}.values()]
    try:
        with torch.no_grad():
            for s in range(0, len(retain_task), 16):
                b = answer_batch(tiny_facts, retain_task, list(range(s, min(len(retain_task), s + 16))))
                state["valid"] = b.valid
                tiny_facts.logits(b.tokens)
    finally:
        for h in hooks:
            h.remove()
    params = tiny_facts.named_parameters()
    kept = 0
    for u in units:
        x = torch.cat(xs[u.module])[:, u.cols]
        w = params[u.name].detach()[u.rows, u.cols]
        d = grads[u.name][u.rows, u.cols]
        d = d / d.norm() * w.norm()
        dp = project(d, nullspace_projector(moments[u.key], 1e-10))
        y0, y1 = x @ w.T, x @ (w + dp).T
        assert (y1 - y0).norm() <= 1e-4 * y0.norm(), u
        assert (x @ d.T).norm() > 1e-2 * y0.norm()  # without the projection the outputs move
        kept += int(dp.norm() > 1e-3 * d.norm())
    assert kept >= len(units) // 2  # the projection leaves a real direction in most units


def test_projector_bound_at_any_threshold(tiny_facts, retain_task):
    """‖Δ P x‖² averaged over retain tokens ≤ τ λ_max ‖Δ P‖²; P is a symmetric idempotent."""
    _, units = circuit_mask(tiny_facts, ("m1",))
    moments, _ = retain_second_moments(tiny_facts, retain_task, units)
    c = moments[units[0].key]
    lam = float(torch.linalg.eigvalsh(c).max())
    g = torch.Generator().manual_seed(0)
    for tau in (1e-2, 1e-4):
        p = nullspace_projector(c, tau)
        assert torch.allclose(p, p.T, atol=1e-5) and torch.allclose(p @ p, p, atol=1e-4)
        d = torch.randn(7, c.shape[0], generator=g)
        dp = project(d, p).double()
        assert float(torch.einsum("ri,ij,rj->", dp, c, dp)) <= tau * lam * float((dp**2).sum()) * 1.001


def test_select_under_budget_is_greedy_by_ratio():
    gain = torch.tensor([1.0, 4.0, 3.0, -1.0, 2.0, 0.5])
    cost = torch.tensor([1.0, 1.0, 3.0, 0.0, 0.0, 1.0])
    # order: free move idx4 (gain 2), then idx1 (4), idx0 (1), idx5 (0.5), idx2 (1); idx3 has no gain
    assert select_under_budget(gain, cost, 2.0).tolist() == [True, True, False, False, True, False]
    assert select_under_budget(gain, cost, 2.0, max_count=2).tolist() == [False, True, False, False, True, False]
    assert select_under_budget(gain, cost, 0.0).tolist() == [False, False, False, False, True, False]


def test_floor_flips_every_moved_code_and_keeps_absmax():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 128, generator=g) * 0.05
    direction = torch.randn(16, 128, generator=g)
    delta = apply_floor(w, direction, kappa=1.05)
    moved = delta != 0
    assert moved.float().mean() > 0.8
    assert torch.equal(block_absmax(w + delta), block_absmax(w))
    i0, _ = code_index(w)
    i1, _ = code_index(w + delta)
    assert torch.equal(i0 != i1, moved)  # every moved weight flips, no other code changes
    assert (torch.sign(delta[moved]) == torch.sign(direction[moved])).all()
    a = block_absmax(w).repeat_interleave(64).reshape(w.shape)
    assert not moved[w.abs() == a].any()
    with pytest.raises(CircuitForgeError):
        apply_floor(w, direction, kappa=0.5)


def test_same_seed_same_weights(tiny_facts, forget_task, retain_task):
    kw = dict(circuit_nodes=NODES, max_steps=2)
    a = unlearn(tiny_facts, forget_task, retain_task, method="mansu", seed=3, **kw)
    b = unlearn(tiny_facts, forget_task, retain_task, method="mansu", seed=3, **kw)
    pa, pb = a.handle.named_parameters(), b.handle.named_parameters()
    assert a.mask_stats["n_changed"] > 0
    assert all(torch.equal(pa[n], pb[n]) for n in pa)


def test_mansu_takes_a_circuit_object(tiny_facts, forget_task, retain_task):
    class C:  # duck-typed like circuitforge.circuits.Circuit
        nodes = {"m3", "a0.h0"}
        faithfulness, message, n_edges = 0.9, "given", 3

    r = unlearn(tiny_facts, forget_task, retain_task, method="mansu", circuit=C(), max_steps=1)
    assert r.settings["circuit_nodes"] == ("a0.h0", "m3")
    assert r.diagnostics["circuit"]["source"] == "given circuit"


def test_mansu_rejects_bad_settings(tiny_facts, forget_task, retain_task):
    with pytest.raises(CircuitForgeError, match="kappa"):
        unlearn(tiny_facts, forget_task, retain_task, method="mansu", kappa=1.0)
    with pytest.raises(CircuitForgeError, match="forget_loss"):
        unlearn(tiny_facts, forget_task, retain_task, method="mansu", forget_loss="nope")
    with pytest.raises(CircuitForgeError):
        unlearn(tiny_facts, forget_task, retain_task, method="mansu", circuit_nodes=("x9",))
