"""Benchmark: cost of the NF4 survival check relative to the full-precision evaluation it wraps, and the
agreement of the two quantization routes (max |logit(a) − logit(b)|: route (a) = real ``BitsAndBytesConfig``
load of a saved checkpoint, route (b) = bitsandbytes round trip on a copy) on the tiny models and the model.

    python benchmarks/quant.py [--model smollm2-135m] [--task builtin:forget] [--repeats 2] [--out PATH]

Writes ``docs/results/quant_smollm2.json``; ``scripts/docs_tables.py`` renders docs/quant.md from it.

The NF4 check = route (b) (``quantized_copy``: copy the model, bitsandbytes quantize→dequantize round trip of
every quantized linear weight) + the same ``evaluate`` on the copy. Target: ratio ≤ 2×. Prints the median of
``--repeats`` runs of each, after one warm-up, and the ratio. Nothing is hard-coded: every number is measured.
"""

import argparse
import os
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="builtin:forget")
    ap.add_argument("--scheme", default="nf4")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="docs/results/quant_smollm2.json", help="results JSON ('' = none)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    from circuitforge.data import evaluate, load_task
    from circuitforge.models import load
    from circuitforge.quant import Scheme, quantized_copy

    handle = load(args.model)
    task = load_task(args.task)
    scheme = Scheme.parse(args.scheme)
    evaluate(handle, task)  # warm-up

    fp_times, q_times, quant_only = [], [], []
    acc_fp = acc_q = float("nan")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        acc_fp = evaluate(handle, task).accuracy
        fp_times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        q = quantized_copy(handle, scheme)
        t1 = time.perf_counter()
        acc_q = evaluate(q, task).accuracy
        q_times.append(time.perf_counter() - t0)
        quant_only.append(t1 - t0)
        del q

    fp, nf = statistics.median(fp_times), statistics.median(q_times)
    print(f"model {args.model}, task {args.task} ({len(task.items)} items), scheme {scheme.label}")
    print(f"full-precision evaluate: {fp:.2f} s (accuracy {acc_fp:.3f})")
    print(f"{scheme.label} check: {nf:.2f} s = copy+quantize {statistics.median(quant_only):.2f} s + evaluate "
          f"(accuracy {acc_q:.3f})")
    print(f"ratio {scheme.label} check / fp evaluate = {nf / fp:.2f}x (target <= 2x)")
    rows: list[list[object]] = [
        ["full-precision evaluate", f"{fp:.2f} s", f"accuracy {acc_fp:.3f} ({len(task.items)} items)"],
        [f"{scheme.label} check (copy + quantize + evaluate)", f"{nf:.2f} s",
         f"{nf / fp:.2f}x fp evaluate (target <= 2x); accuracy {acc_q:.3f}"],
    ]
    for spec, schemes in (("tiny-llama", ("nf4", "fp4", "nf4-dq", "fp4-dq")), ("tiny-gpt2", ("nf4", "fp4")),
                          (args.model, ("nf4",))):
        h = handle if spec == args.model else load(spec)
        for sch in schemes:
            d = route_gap(h, task if spec == args.model else None, sch)
            print(f"route (a) vs (b), {spec}, {sch}: max |Δlogit| {d:.2e}", flush=True)
            rows.append([f"route (a) vs (b) max |Δlogit|, {spec}, {sch}", f"{d:.2e}", ""])
    # the edit the paper criticises: 12 steps of gradient ascent (Adam, lr 1e-5, all parameters, no early stop)
    from circuitforge.quant import diff_report
    from circuitforge.surgery import unlearn

    ga = unlearn(handle, task.head(8), load_task("builtin:retain").head(8), method="ga", seed=0, lr=1e-5,
                 max_steps=12, eval_every=100, target_forget_acc=0.0, scope="all")
    d = diff_report(handle, ga.handle, scheme.label)
    rows += [
        ["GA-12 edit: median NF4 bin width / |Δθ|", f"{d['median_binwidth_to_update_ratio']:.0f}",
         f"p5 {d['binwidth_to_update_ratio']['p5']:.0f}, p95 {d['binwidth_to_update_ratio']['p95']:.0f} "
         "(paper: 47–828× for baselines)"],
        ["GA-12 edit: changed share / NF4 code-flip rate", f"{d['changed_share']:.4f} / {d['code_flip_rate']:.4f}",
         f"flips at fixed absmax {d['code_flip_rate_fixed_absmax']:.4f}; {d['n_absmax_changed_blocks']} of "
         f"{d['n_blocks']} blocks changed absmax"],
        [f"base model forget accuracy, fp → {scheme.label}", f"{acc_fp:.3f} → {acc_q:.3f}", ""],
    ]
    if args.out:
        import sys

        from circuitforge._provenance import run_info, write_json_atomic

        cmd = ("python benchmarks/quant.py " + " ".join(sys.argv[1:])).strip()
        write_json_atomic(args.out, {"format": "circuitforge.bench-quant/1", "command": cmd, "run_info": run_info(),
                                     "model": handle.identity(), "task": task.identity(),
                                     "table": {"columns": ["measurement", "value", "note"], "rows": rows}})
        print(f"wrote {args.out}")


def route_gap(handle, task, scheme: str) -> float:
    """max |logit| difference between route (a) and route (b) on a fixed token batch (the task's first 8
    prompts, or 32 seeded random tokens for the tiny models)."""
    import tempfile
    from pathlib import Path

    from circuitforge.models import save
    from circuitforge.quant import load_quantized, quantized_copy

    if task is not None:
        toks = handle.to_tokens([it.prompt for it in task.items[:8]])
    else:
        toks = torch.randint(0, handle.d_vocab, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        qa = load_quantized(save(handle, Path(tmp) / "m"), scheme)
        la = qa.logits(toks)
        lb = quantized_copy(handle, scheme).logits(toks)
    return float((la - lb).abs().max())


if __name__ == "__main__":
    main()
