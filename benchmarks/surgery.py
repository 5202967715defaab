"""Benchmark: MANSU and every baseline on SmolLM2-135M with the built-in forget/retain benchmark.

    python benchmarks/surgery.py [--model smollm2-135m] [--rows 64] [--methods mansu,ga,...] [--out FILE.json]

For each method (default settings, seed 0): forget and retain accuracy in full precision and after the NF4
round trip (bitsandbytes, route b), the share of parameters edited (exact diff, all parameters), the median
NF4 bin width ÷ |Δθ| and the code-flip rate over the quantized weights (``quant.diff_report``), and the wall
time of ``unlearn``. ``--rows N`` takes N evenly spaced rows of each task (the whole benchmark on a shared
2-core CPU takes hours; the table in docs/surgery.md says which N it used). Every number is measured.
"""

import argparse
import json
import os
import time

import torch


def spread(task, n):  # type: ignore[no-untyped-def]
    if n >= len(task):
        return task
    step = len(task) / n
    return task.subset([int(i * step) for i in range(n)], name=f"{task.name}[spread {n}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--forget", default="builtin:forget")
    ap.add_argument("--retain", default="builtin:retain")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--methods", default="mansu,ga,graddiff,npo,rmu,sure")
    ap.add_argument("--set", action="append", default=[], help="METHOD:NAME=VALUE")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    from circuitforge.data import evaluate, load_task
    from circuitforge.models import load
    from circuitforge.quant import diff_report, quantized_copy
    from circuitforge.surgery import parse_settings, settings_class, unlearn

    base = load(args.model)
    forget, retain = spread(load_task(args.forget), args.rows), spread(load_task(args.retain), args.rows)
    rows = []
    q = quantized_copy(base, "nf4")
    rows.append({"method": "base", "forget_fp": evaluate(base, forget).accuracy, "forget_nf4": evaluate(q, forget).accuracy,
                 "retain_fp": evaluate(base, retain).accuracy, "retain_nf4": evaluate(q, retain).accuracy})
    print(rows[-1], flush=True)
    del q
    for m in args.methods.split(","):
        pairs = [s.split(":", 1)[1] for s in args.set if s.startswith(m + ":")]
        kw = parse_settings(settings_class(m), pairs)
        t0 = time.perf_counter()
        res = unlearn(base, forget, retain, method=m, seed=0, **kw)
        wall = time.perf_counter() - t0
        q = quantized_copy(res.handle, "nf4")
        d = diff_report(base, res.handle, "nf4", per_tensor=False)
        row = {
            "method": m, "settings": kw, "stop_reason": res.stop_reason, "steps": len(res.loss_history) - 1,
            "forget_fp": evaluate(res.handle, forget).accuracy, "forget_nf4": evaluate(q, forget).accuracy,
            "retain_fp": evaluate(res.handle, retain).accuracy, "retain_nf4": evaluate(q, retain).accuracy,
            "edited_share_all_params": res.mask_stats["changed_share"], "n_edited": res.mask_stats["n_changed"],
            "median_binwidth_to_update_ratio": d["median_binwidth_to_update_ratio"],
            "code_flip_rate": d["code_flip_rate"], "wall_s": wall,
        }
        if m == "mansu":
            row["circuit"] = res.diagnostics["circuit"]
            row["fisher_spent"] = res.diagnostics["fisher_spent"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        del q, res
    print(f"\nmodel {args.model}, {len(forget)} forget rows, {len(retain)} retain rows, NF4 = bitsandbytes round trip")
    print("| method | forget fp | forget NF4 | retain fp | retain NF4 | share edited | median bin/|Δθ| | code-flip rate | stop | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def f(k: str, fmt: str = "{:.3f}", r: dict = r) -> str:  # type: ignore[type-arg]
            v = r.get(k)
            return "—" if v is None else fmt.format(v)
        print(f"| {r['method']} | {f('forget_fp')} | {f('forget_nf4')} | {f('retain_fp')} | {f('retain_nf4')} | "
              f"{f('edited_share_all_params', '{:.2e}')} | {f('median_binwidth_to_update_ratio', '{:.3g}')} | "
              f"{f('code_flip_rate')} | {r.get('stop_reason', '—')} | {f('wall_s', '{:.0f}')} |")
    if args.out:
        from circuitforge._provenance import write_json_atomic

        write_json_atomic(args.out, {"model": args.model, "rows": args.rows, "results": rows})


if __name__ == "__main__":
    main()
