"""Benchmark: cost of the NF4 survival check relative to the full-precision evaluation it wraps.

    python benchmarks/quant.py [--model smollm2-135m] [--task builtin:forget] [--repeats 2]

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


if __name__ == "__main__":
    main()
