"""Peak memory of edge attribution, with and without a memory budget, on the three model families.

    python benchmarks/attribution_memory.py [--models smollm2-135m gemma3-270m qwen2.5-0.5b] [--rows 4 16]
        [--method eap] [--json docs/results/attribution_memory.json]

For each model and row count (all rows in one pass), measured in this run, side by side:

* ``unbudgeted``: ``attribute(level="edge", batch_size=rows)`` — every reader's gradient collected;
* ``streamed``: the same rows with a budget large enough for one pass (reader gradients streamed into the
  edge scores, nothing else changed);
* ``budget ½``: a budget of half the unbudgeted peak (rows per pass planned from two probe passes).

Peak = tensor memory allocated above the starting level (``circuitforge.attribution.memory.peak_bytes``:
``torch.profiler`` on the CPU, ``max_memory_allocated`` on CUDA); seconds include the profiler's overhead
(the same for every column). Scores of the budgeted runs are compared with the unbudgeted ones (max |Δ| ÷
max |score|). Then a projection for Llama-3.1-8B from the measured bytes per (row · position · d_model ·
node), stated with its assumptions.
"""

import argparse
import sys
import time

import torch

TASKS = {"smollm2-135m": "builtin:forget", "gemma3-270m": "builtin:gemma3-270m/forget",
         "qwen2.5-0.5b": "builtin:qwen2.5-0.5b/forget"}

# Llama-3.1-8B (published config): 32 layers, 32 query heads, 8 KV heads, d_model 4096, bf16
LLAMA_8B = {"n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "d_model": 4096, "bytes": 2, "params": 8.03e9}


def nodes(n_layers: int, n_heads: int, n_kv: int) -> tuple[int, int]:
    """(writers, readers) of the attribution graph: input + heads + MLP per layer; q per head, k/v per KV
    head, MLP per layer, logits."""
    return 1 + n_layers * (n_heads + 1), n_layers * (n_heads + 2 * n_kv + 1) + 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(TASKS))
    ap.add_argument("--rows", nargs="+", type=int, default=[4, 16])
    ap.add_argument("--method", default="eap", choices=["eap", "eap-ig"])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)

    from circuitforge.attribution import attribute, encode_task
    from circuitforge.attribution.graph import layout_of
    from circuitforge.attribution.memory import fmt_bytes, peak_bytes
    from circuitforge.data import load_task
    from circuitforge.models import load

    rows_out = []
    print("| model | rows | positions | unbudgeted peak | s | streamed peak | s | budget ½ | planned rows/pass | peak | within | s | max rel. Δ score |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in a.models:
        h = load(spec)
        lay = layout_of(h)
        task_all = load_task(TASKS[spec])
        for n in a.rows:
            task = task_all.head(n)
            pos = int(encode_task(h, task).clean.shape[1])
            kw = dict(method=a.method, level="edge", ig_steps=3)
            t0 = time.perf_counter()
            full, p_full = peak_bytes(lambda h=h, task=task, n=n, kw=kw: attribute(h, task, batch_size=n, **kw),
                                      h.device)
            t_full = time.perf_counter() - t0
            t0 = time.perf_counter()
            st = attribute(h, task, memory_budget=4 * p_full, **kw)
            t_st = time.perf_counter() - t0
            t0 = time.perf_counter()
            half = attribute(h, task, memory_budget=p_full // 2, **kw)
            t_half = time.perf_counter() - t0
            scale = float(full.edge_scores.abs().max())
            dev = max(float((g.edge_scores - full.edge_scores).abs().max()) / scale for g in (st, half))
            ms, mh = st.settings["memory"], half.settings["memory"]
            r = {"model": spec, "rows": n, "positions": pos, "writers": len(lay.writers), "readers": len(lay.readers),
                 "d_model": h.d_model, "unbudgeted_peak": p_full, "unbudgeted_seconds": t_full,
                 "streamed": ms, "streamed_seconds": t_st, "half": mh, "half_seconds": t_half,
                 "max_rel_score_difference": dev}
            rows_out.append(r)
            print(f"| {spec} | {n} | {pos} | {fmt_bytes(p_full)} | {t_full:.1f} | {fmt_bytes(ms['peak'])} "
                  f"(rows {ms['rows']}) | {t_st:.1f} | {fmt_bytes(mh['budget'])} | {mh['rows']} | {fmt_bytes(mh['peak'])} | "
                  f"{'yes' if mh['within_budget'] else '**no**'} | {t_half:.1f} | {dev:.1e} |", flush=True)

    # projection: bytes per (row · position · d_model · (writers + readers)) of a pass, per family
    print("\nper-pass bytes per row · position · d_model · node (fp32 CPU runs), unbudgeted → streamed:")
    coeffs = []
    for r in rows_out:
        unit = r["rows"] * r["positions"] * r["d_model"] * (r["writers"] + r["readers"])
        cu, cs = r["unbudgeted_peak"] / unit, r["streamed"]["peak"] / unit
        coeffs.append((cu, cs))
        print(f"  {r['model']} rows {r['rows']}: {cu:.1f} → {cs:.1f}")
    cu = max(c[0] for c in coeffs)
    cs = max(c[1] for c in coeffs)
    W, R = nodes(LLAMA_8B["n_layers"], LLAMA_8B["n_heads"], LLAMA_8B["n_kv_heads"])
    proj = {}
    for rows, positions in ((1, 128), (8, 128), (32, 128)):
        unit = rows * positions * LLAMA_8B["d_model"] * (W + R) * LLAMA_8B["bytes"] / 4
        flops = 3 * 2 * LLAMA_8B["params"] * rows * positions + 2 * W * R / 2 * rows * positions * LLAMA_8B["d_model"]
        proj[f"{rows}x{positions}"] = {"unbudgeted_bytes": cu * unit, "streamed_bytes": cs * unit, "flops": flops}
        print(f"Llama-3.1-8B, {rows} rows × {positions} positions, bf16: ≈ {fmt_bytes(cu * unit)} unbudgeted, "
              f"≈ {fmt_bytes(cs * unit)} streamed, besides 16 GB of weights; ≈ {flops / 1e12:.0f} TFLOP per pass")
    print("(projection: the largest measured coefficient, scaled linearly by rows · positions · d_model · nodes and "
          "by 2/4 bytes for bf16; attention's positions² terms and the vocabulary are not in it. Split over GPUs "
          "with device_map, the weights and each layer's activations are divided by the layer split; the edge "
          "scores and Δa of the writers upstream of a reader must reach that reader's device.)")
    if a.json:
        from circuitforge._provenance import run_info, write_json_atomic

        write_json_atomic(a.json, {"command": "python " + " ".join(sys.argv), "run_info": run_info(),
                                   "method": a.method, "runs": rows_out, "llama_3_1_8b_projection": proj,
                                   "coefficients": {"unbudgeted": cu, "streamed": cs}})


if __name__ == "__main__":
    main()
