"""Tried for the retrain oracle (issue 12): a tuned lens fitted on M₁ itself, instead of hybrids with M₀.

    python benchmarks/cad_own_lens.py [--json docs/results/cad_validation/own_lens.json]

Hybrids need M₀ and M₁ to share a residual basis, which a model retrained from scratch does not (the
"retrain pitfall" on docs/cad-validation.md), so the gold retrain oracle can only be `indeterminate`. This
script asks whether evidence read inside M₁ alone could stand in: per layer L an affine map (ridge least
squares, λ = 0.01 · rows) from M₁'s residual before block L to M₁'s final residual, fitted at every position
of texts the edit should not touch (the retain and retain-paraphrase rows, and the same-domain facts rows
32–47 with their paraphrases), then M₁'s own final norm and unembedding. Per layer: the mean answer −
corrupt-answer logit margin on the targeted rows 0–15 (split A) and on the same-domain rows, each divided by
M₀'s final margin on the same rows. Tiny trained model; the models are the validation's split-A controls
and one GA run (lr 1e-3, the validation's setting).
"""

import argparse
import sys

import torch


def _saver(name: str, store: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    return lambda x, hook: store.__setitem__(name, x.detach()[0])


def residuals(h, prompts):  # type: ignore[no-untyped-def]
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(h.n_layers)] + ["ln_final.hook_in"]
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for p in prompts:
        store: dict[str, torch.Tensor] = {}
        hooks = [(n, _saver(n, store)) for n in names]
        with torch.no_grad(), h.bridge.hooks(fwd_hooks=hooks):
            h.bridge(h.bridge.to_tokens(p))
        for n in names:
            out[n].append(store[n])
    return names, out


def fit_lens(h, tasks, lam: float = 1e-2):  # type: ignore[no-untyped-def]
    names, out = residuals(h, [it.prompt for t in tasks for it in t.items])
    y = torch.cat(out[names[-1]])
    lenses = []
    for n in names[:-1]:
        x = torch.cat(out[n])
        x1 = torch.cat([x, torch.ones(len(x), 1)], 1)
        lenses.append(torch.linalg.solve(x1.T @ x1 + lam * len(x) * torch.eye(x1.shape[1]), x1.T @ y))
    return lenses


def margins(h, lenses, task) -> list[float]:  # type: ignore[no-untyped-def]
    names, out = residuals(h, [it.prompt for it in task.items])
    tok = h.tokenizer
    a = torch.tensor([tok(it.answer, add_special_tokens=False)["input_ids"][0] for it in task.items])
    c = torch.tensor([tok(it.corrupt_answer, add_special_tokens=False)["input_ids"][0] for it in task.items])
    rows = torch.arange(len(a))
    res = []
    for layer, n in enumerate(names):
        x = torch.stack([o[-1] for o in out[n]])
        if layer < len(lenses):
            x = torch.cat([x, torch.ones(len(x), 1)], 1) @ lenses[layer]
        with torch.no_grad():
            lg = h.bridge.unembed(h.bridge.ln_final(x[:, None, :]))[:, 0]
        res.append(float((lg[rows, a] - lg[rows, c]).mean()))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    from circuitforge.cad import early_ascent, late_ascent, subject_erasure
    from circuitforge.data import load_task
    from circuitforge.models import load
    from circuitforge.models.tiny import ensure_retrained
    from circuitforge.surgery import unlearn

    m0 = load("tiny-facts")
    forget = load_task("tiny-facts:forget")
    fp = load_task("tiny-facts:forget_paraphrase")
    target, same = forget.subset(range(0, 16), "A"), forget.subset(range(32, 48), "same-domain")
    fit = [load_task("tiny-facts:retain"), load_task("tiny-facts:retain_paraphrase"), same,
           fp.subset(range(32, 48), "same-domain paraphrase")]
    models = [
        ("M0 itself", "unchanged", lambda: m0),
        ("oracle-same-init", "erasure (gold)", lambda: load(str(ensure_retrained(tuple(range(16)), 0, 0)))),
        ("oracle-other-init", "erasure (gold)", lambda: load(str(ensure_retrained(tuple(range(16)), 1, 1)))),
        ("retrain-other-init (all facts)", "unchanged (gold)", lambda: load(str(ensure_retrained((), 1, 1)))),
        ("late-ascent (last block)", "suppression", lambda: late_ascent(m0, target, layers=1, retain=same)),
        ("early-ascent (first block)", "erasure (early)", lambda: early_ascent(m0, target, retain=same)),
        ("subject-erasure", "erasure", lambda: subject_erasure(m0, target)),
        ("ga (lr 1e-3)", "method", lambda: unlearn(m0, target, same, method="ga", lr=1e-3).handle),
    ]
    l0 = fit_lens(m0, fit)
    base_f, base_s = margins(m0, l0, target)[-1], margins(m0, l0, same)[-1]
    rows = []
    print(f"M0 final margin: targeted {base_f:.2f}, same-domain {base_s:.2f} (logit units)\n")
    print("| model | label | targeted R_L, L = 0..n (own lens) | same-domain R_L (own lens) |")
    print("|---|---|---|---|")
    for name, label, build in models:
        h = build()
        lenses = fit_lens(h, fit)
        rf = [x / base_f for x in margins(h, lenses, target)]
        rs = [x / base_s for x in margins(h, lenses, same)]
        rows.append({"model": name, "label": label, "targeted": rf, "same_domain": rs})
        print(f"| {name} | {label} | " + ", ".join(f"{x:.2f}" for x in rf) + " | " + ", ".join(f"{x:.2f}" for x in rs) + " |",
              flush=True)
    if a.json:
        from circuitforge._provenance import run_info, write_json_atomic

        write_json_atomic(a.json, {"command": "python " + " ".join(sys.argv), "run_info": run_info(), "rows": rows,
                                   "base_margin": {"targeted": base_f, "same_domain": base_s}})


if __name__ == "__main__":
    main()
