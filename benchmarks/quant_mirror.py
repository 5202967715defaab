"""Benchmark: MANSU's per-step quantized copy — a fresh ``quantized_copy`` (clone + fake-quantize every linear
weight) against ``QuantizedMirror.refresh`` of the matrices one MANSU step touched, side by side in one process.

    python benchmarks/quant_mirror.py [--model smollm2-135m] [--repeats 3] [--share 0.5] [--out FILE.json]

``--share``: the share of the quantized matrices refreshed (a default MANSU step on SmolLM2 touches matrices
of most layers; 1.0 is the worst case). Prints seconds per call and the ratio; checks that the refreshed mirror
equals a fresh copy bit for bit.
"""

import argparse
import json
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--share", type=float, default=0.5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from circuitforge._provenance import write_json_atomic
    from circuitforge.models import clone, load
    from circuitforge.quant import QuantizedMirror, quantized_copy, quantized_linear_names

    src = clone(load(a.model))
    names = quantized_linear_names(src)
    touched = names[:: max(1, round(1 / a.share))] if a.share < 1 else names
    mirror = QuantizedMirror(src, "nf4", backend="torch")
    params = src.named_parameters()
    fresh_s, refresh_s = [], []
    for r in range(a.repeats):
        with torch.no_grad():  # a small edit in every touched matrix, as a MANSU step makes
            for n in touched:
                params[n].view(-1)[r::4096] += 1e-3
        t = time.perf_counter()
        fresh = quantized_copy(src, "nf4", backend="torch")
        fresh_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        mirror.refresh(touched)
        refresh_s.append(time.perf_counter() - t)
    got, want = mirror.handle.named_parameters(), fresh.named_parameters()
    equal = all(torch.equal(got[n], want[n]) for n in want)
    doc = {"format": "circuitforge.bench_quant_mirror/1", "model": a.model, "cores": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "matrices": len(names), "refreshed": len(touched),
           "fresh_copy_s": fresh_s, "mirror_refresh_s": refresh_s,
           "ratio_median": sorted(fresh_s)[len(fresh_s) // 2] / sorted(refresh_s)[len(refresh_s) // 2],
           "bitwise_equal": equal,
           "command": "python benchmarks/quant_mirror.py " + " ".join(f"--{k} {v}" for k, v in vars(a).items() if v is not None)}
    print(json.dumps(doc, indent=1))
    if a.out:
        write_json_atomic(a.out, doc)
    if not equal:
        raise SystemExit("mirror differs from a fresh quantized copy")


if __name__ == "__main__":
    main()
