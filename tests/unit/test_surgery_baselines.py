"""The baselines on tiny-facts, the shared interface, SURE's mask, the input handle's state, saving."""

import json

import pytest
import torch

from circuitforge.errors import CircuitForgeError
from circuitforge.surgery import METHODS, parse_settings, settings_class, unlearn
from circuitforge.surgery._common import make_settings
from circuitforge.surgery.sure import saliency_mask

FAST = {  # tiny-facts needs a larger learning rate than the SmolLM2-sized defaults
    "ga": {"lr": 1e-3},
    "graddiff": {"lr": 1e-3},
    "npo": {"lr": 1e-3},
    "rmu": {"lr": 3e-3, "max_steps": 30},
    "sure": {"lr": 3e-3},
}


@pytest.mark.parametrize("method", sorted(FAST))
def test_baseline_forgets_on_tiny_facts(method, tiny_facts, forget_task, retain_task):
    r = unlearn(tiny_facts, forget_task, retain_task, method=method, seed=0, **FAST[method])
    fin = r.diagnostics["final"]
    assert fin["forget_acc"] < 0.8, (method, r.loss_history[-1])
    assert r.method == method and r.seed == 0 and r.settings["lr"] == FAST[method]["lr"]
    assert r.loss_history[0]["step"] == 0 and r.loss_history[-1]["step"] >= 1
    assert r.mask_stats["n_changed"] > 0
    if method != "ga":  # every method with a retain term keeps retain
        assert fin["retain_acc"] >= 0.75, (method, fin)


def test_sure_mask_is_applied_exactly(tiny_facts, forget_task, retain_task):
    """The published SURE code built a mask that never reached the update; ours must."""
    r = unlearn(tiny_facts, forget_task, retain_task, method="sure", seed=0, lr=3e-3, max_steps=4,
                saliency_share=0.25)
    salient = set(r.diagnostics["salient_modules"])
    assert 0 < len(salient) < r.diagnostics["n_modules"]
    base, edited = tiny_facts.named_parameters(), r.handle.named_parameters()
    for name, p in base.items():
        changed = bool((p.detach() != edited[name].detach()).any())
        assert changed == (name in salient), name  # salient modules move, nothing else does
    assert r.mask_stats["n_changed_outside_mask"] == 0


def test_sure_element_mask_is_applied_exactly(tiny_facts, forget_task, retain_task):
    r = unlearn(tiny_facts, forget_task, retain_task, method="sure", seed=0, lr=3e-3, max_steps=3,
                saliency_unit="element", saliency_share=0.01)
    stats = r.mask_stats
    assert stats["n_changed_outside_mask"] == 0
    assert 0 < stats["n_changed"] <= stats["n_mask"] < 0.02 * stats["n_params"]


def test_saliency_mask_top_share():
    grads = {"a": torch.ones(2, 2) * 3, "b": torch.ones(2, 2), "c": torch.ones(3, 3) * 2}
    m = saliency_mask(grads, "module", 0.5)
    assert [bool(m[k].all()) for k in "abc"] == [True, False, True]
    e = saliency_mask(grads, "element", 4 / 17)
    assert int(sum(int(v.sum()) for v in e.values())) == 4 and bool(e["a"].all())


@pytest.mark.parametrize("method", METHODS)
def test_input_handle_untouched_and_state_restored(method, fresh, forget_task, retain_task):
    h = fresh("tiny-facts")
    h.bridge.train()
    frozen = next(iter(h.named_parameters().values()))
    frozen.requires_grad_(False)
    before = {k: v.clone() for k, v in h.state_dict().items()}
    flags = [p.requires_grad for p in h.hf.parameters()]
    kw = {"circuit_nodes": ("m3",)} if method == "mansu" else {"lr": 1e-3}
    r = unlearn(h, forget_task.head(8), retain_task.head(8), method=method, max_steps=2, **kw)
    assert r.handle is not h and r.handle.hf is not h.hf
    assert all(torch.equal(before[k], v) for k, v in h.state_dict().items())
    assert h.bridge.training and [p.requires_grad for p in h.hf.parameters()] == flags
    assert not r.handle.bridge.training and all(p.grad is None for p in r.handle.hf.parameters())


def test_settings_validation_and_parsing():
    with pytest.raises(CircuitForgeError, match="unknown setting"):
        make_settings(settings_class("ga"), nope=1)
    with pytest.raises(CircuitForgeError, match="lr must be"):
        make_settings(settings_class("npo"), lr=0.0)
    with pytest.raises(CircuitForgeError, match="unknown unlearning method"):
        settings_class("fancy")
    with pytest.raises(ValueError):
        settings_class("ga")(lr=-1.0)
    with pytest.raises((ValueError, TypeError)):  # TypeError: the runtime type checker sees the Literal first
        settings_class("sure")(objective="other")
    kw = parse_settings(settings_class("mansu"), ["circuit_nodes=a0.h1,m2.n7", "circuit_level=node", "kappa=1.5",
                                                   "forget_loss=npo"])
    assert kw == {"circuit_nodes": ("a0.h1", "m2.n7"), "circuit_level": "node", "kappa": 1.5, "forget_loss": "npo"}
    assert parse_settings(settings_class("rmu"), ["layer=2", "max_grad_norm=None"]) == {"layer": 2, "max_grad_norm": None}
    with pytest.raises(CircuitForgeError):
        parse_settings(settings_class("ga"), ["lr=fast"])
    with pytest.raises(CircuitForgeError):
        parse_settings(settings_class("ga"), ["scope=some"])


def test_result_saves_and_reloads(tiny_facts, forget_task, retain_task, tmp_path):
    from circuitforge.models import load

    r = unlearn(tiny_facts, forget_task, retain_task, method="graddiff", seed=1, lr=1e-3, max_steps=4)
    folder = r.save(tmp_path / "ckpt")
    with pytest.raises(CircuitForgeError):
        r.save(tmp_path / "ckpt")
    back = load(str(folder))
    assert back.sha256 == r.handle.sha256
    man = json.loads((folder / "circuitforge.json").read_text())["unlearn"]
    assert man["method"] == "graddiff" and man["seed"] == 1 and man["settings"]["lr"] == 1e-3
    assert man["base"]["sha256"] == tiny_facts.sha256
    assert man["edited"]["sha256"] == r.handle.sha256
    assert man["edited_parameters"]["n_changed"] == r.mask_stats["n_changed"] > 0
    assert set(man["tasks"]) == {"forget", "retain"}


def test_rmu_skip_bos_leaves_out_the_shared_sink_position(tiny_facts, forget_task, retain_task):
    """Position 0 (BOS) has the same residual in every forget and retain row, so RMU's two losses pull it
    apart; ``skip_bos`` drops it from both losses and from the norm that sets the steering coefficient."""
    from circuitforge.surgery.objectives import answer_batch
    from circuitforge.surgery.rmu import loss_positions

    f, r = answer_batch(tiny_facts, forget_task, [0, 1, 2]), answer_batch(tiny_facts, retain_task, [0, 1])
    layer = 1
    hooks = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        hf = tiny_facts.bridge.run_with_cache(f.tokens, names_filter=hooks)[1][hooks]
        hr = tiny_facts.bridge.run_with_cache(r.tokens, names_filter=hooks)[1][hooks]
    assert bool((f.tokens[:, 0] == r.tokens[0, 0]).all())
    torch.testing.assert_close(hf[:, 0], hr[0, 0].expand_as(hf[:, 0]))      # the premise: one shared vector
    assert float((hf[:, 1:] - hf[:1, 1:]).abs().amax()) > 1e-2                # later positions differ by row
    kept = loss_positions(tiny_facts, f.valid, True)
    assert not kept[:, 0].any() and torch.equal(kept[:, 1:], f.valid[:, 1:])
    assert torch.equal(loss_positions(tiny_facts, f.valid, False), f.valid)
    # the steering coefficient: scale × mean norm over the positions the loss reads (all forget rows)
    coeff = {}
    for skip in (False, True):
        res = unlearn(tiny_facts, forget_task, retain_task, method="rmu", seed=0, lr=1e-3, max_steps=1,
                      layer=layer, steering_scale=2.0, skip_bos=skip)
        coeff[skip] = res.diagnostics["steering_coeff"]
    full = answer_batch(tiny_facts, forget_task)
    with torch.no_grad():
        h = tiny_facts.bridge.run_with_cache(full.tokens, names_filter=hooks)[1][hooks].norm(dim=-1)
    assert coeff[True] == pytest.approx(2.0 * float(h[:, 1:][full.valid[:, 1:]].mean()), rel=1e-4)
    assert coeff[False] == pytest.approx(2.0 * float(h[full.valid].mean()), rel=1e-4)
    assert coeff[True] != pytest.approx(coeff[False], rel=1e-3)
