"""One step of the relearning attack (and of CAD's benign fine-tune), its two speed-ups measured side by side.

    python benchmarks/relearn_step.py [--model smollm2-135m] [--task builtin:forget] [--batch 16] [--reps 5]
        [--json docs/results/relearn_step_smollm2.json]

The attack (:func:`circuitforge.eval.relearn.attack_curve`) fine-tunes every weight with Adam on the answer NLL
of ``--batch`` forget rows a step. Two changes made it cheaper; this script times both against what they
replaced, interleaved in one run (each repetition times both, alternating which goes first, so a noisy machine
slows both alike), on
the same rows and weights:

* **loss**: ``answer_nll(handle.logits(tokens), batch)`` (every position unembedded, as before) against
  ``answer_nll_at(handle, batch)`` (only the positions that predict answer tokens): forward and backward
  seconds, and the two losses and gradients compared (max |Δ| ÷ max |value|);
* **optimizer**: ``torch.optim.Adam(foreach=False)`` (the per-tensor loop) against
  ``circuitforge.models.hf.adam`` (torch's fused kernel): seconds of ``opt.step()`` on every parameter, and
  the weights after three steps from the same gradients compared.

Prints medians over ``--reps`` and the ratios; ``--json`` writes them with :func:`circuitforge._provenance.run_info`.
"""

import argparse
import statistics
import time

import torch


def _timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="builtin:forget")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)

    from circuitforge._provenance import run_info, write_json_atomic
    from circuitforge.data import load_task
    from circuitforge.models import load
    from circuitforge.models.hf import adam
    from circuitforge.surgery.objectives import answer_batch, answer_nll, answer_nll_at

    h = load(a.model)
    task = load_task(a.task)
    rows = list(range(min(a.batch, len(task))))
    batch = answer_batch(h, task, rows)
    params = list(h.named_parameters().values())  # every weight, as attack_curve trains
    for p in params:
        p.requires_grad_(True)

    def loss_full() -> torch.Tensor:
        return answer_nll(h.logits(batch.tokens.to(h.device)), batch)

    def loss_at() -> torch.Tensor:
        return answer_nll_at(h, batch)

    def fwd_bwd(fn):  # type: ignore[no-untyped-def]
        for p in params:
            p.grad = None
        loss, tf = _timed(fn)
        _, tb = _timed(loss.backward)
        return float(loss.detach()), tf, tb, [p.grad.detach().clone() if p.grad is not None else None for p in params]

    times: dict[str, list[float]] = {k: [] for k in ("full_fwd", "full_bwd", "at_fwd", "at_bwd", "loop", "fused")}
    for r in range(a.reps):
        if r % 2 == 0:   # alternate which goes first, so warm caches favour neither
            lf, tf, tb, gf = fwd_bwd(loss_full)
            la, ta, tab, ga = fwd_bwd(loss_at)
        else:
            la, ta, tab, ga = fwd_bwd(loss_at)
            lf, tf, tb, gf = fwd_bwd(loss_full)
        times["full_fwd"].append(tf), times["full_bwd"].append(tb), times["at_fwd"].append(ta), times["at_bwd"].append(tab)
        if r == 0:
            loss_rel = abs(lf - la) / abs(lf)
            gmax = max(float(g.abs().max()) for g in gf if g is not None)
            grad_rel = max(float((x - y).abs().max()) for x, y in zip(gf, ga, strict=True) if x is not None) / gmax
            grads = ga
        del gf, ga
    # the optimizer: the same gradients into two copies of the weights, loop vs fused, step by step
    copies = {k: [p.detach().clone().requires_grad_(True) for p in params] for k in ("loop", "fused")}
    for ps in copies.values():
        for p, g in zip(ps, grads, strict=True):
            p.grad = g.clone() if g is not None else None
    opts = {"loop": torch.optim.Adam(copies["loop"], lr=1e-4, foreach=False), "fused": adam(copies["fused"], 1e-4)}
    for r in range(max(a.reps, 3)):
        for k in (("loop", "fused") if r % 2 == 0 else ("fused", "loop")):
            _, t = _timed(opts[k].step)
            times[k].append(t)
        if r == 2:
            w_rel = max(float((x - y).detach().abs().max()) for x, y in zip(copies["loop"], copies["fused"], strict=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    n_params = sum(p.numel() for p in params)
    print(f"{a.model}: {len(rows)} rows of {a.task}, {batch.tokens.shape[1]} positions, {n_params / 1e6:.0f} M weights, "
          f"medians of {a.reps} interleaved repetitions")
    print("| phase | before | after | before ÷ after |")
    print("|---|---|---|---|")
    print(f"| loss forward | {med['full_fwd']:.3f} s (every position unembedded) | {med['at_fwd']:.3f} s (answer positions) "
          f"| {med['full_fwd'] / med['at_fwd']:.2f} |")
    print(f"| loss backward | {med['full_bwd']:.3f} s | {med['at_bwd']:.3f} s | {med['full_bwd'] / med['at_bwd']:.2f} |")
    print(f"| Adam step | {med['loop']:.3f} s (per-tensor loop) | {med['fused']:.3f} s (fused) | {med['loop'] / med['fused']:.2f} |")
    print(f"agreement: loss rel. Δ {loss_rel:.1e}, gradient max |Δ| ÷ max |g| {grad_rel:.1e}, "
          f"weights after 3 Adam steps max |Δ| {w_rel:.1e}")
    if a.json:
        write_json_atomic(a.json, {
            "command": "python benchmarks/relearn_step.py " + " ".join(
                f"--{k} {v}" for k, v in vars(a).items() if v is not None),
            "run_info": run_info(), "model": a.model, "task": a.task, "rows": len(rows),
            "positions": int(batch.tokens.shape[1]), "weights": n_params, "reps": a.reps,
            "seconds": times, "median_seconds": med,
            "ratios": {"forward": med["full_fwd"] / med["at_fwd"], "backward": med["full_bwd"] / med["at_bwd"],
                       "adam": med["loop"] / med["fused"]},
            "agreement": {"loss_rel": loss_rel, "grad_rel": grad_rel, "weights_after_3_steps_max_abs": w_rel},
        })


if __name__ == "__main__":
    main()
