"""Attribution benchmark on SmolLM2-135M and the built-in forget task (first 32 rows; every row's corrupt
prompt has the clean prompt's token length). One run prints the whole table and writes it to
``docs/results/attribution_smollm2.json``, from which ``scripts/docs_tables.py`` renders docs/attribution.md.

    HF_HUB_OFFLINE=1 python benchmarks/attribution.py [--rows 32] [--skip-exact] [--out PATH]
"""

import argparse
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

from circuitforge.attribution import attribute, encode_task  # noqa: E402
from circuitforge.attribution.metrics import logit_diff, reduce  # noqa: E402
from circuitforge.circuits import minimal_circuit  # noqa: E402
from circuitforge.data import load_task  # noqa: E402
from circuitforge.models import load  # noqa: E402


def timed(fn, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    ap.add_argument("--out", default="docs/results/attribution_smollm2.json", help="results JSON ('' = none)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    h = load("smollm2-135m")
    task = load_task("builtin:forget").head(args.rows)
    batch = encode_task(h, task)
    b = h.bridge
    rows = torch.arange(len(batch))
    print(f"SmolLM2-135M, builtin:forget[:{args.rows}], tokens {tuple(batch.clean.shape)}, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    def fwd_bwd():
        b.zero_grad(set_to_none=True)
        m = reduce(logit_diff(b(batch.corrupt)[rows, batch.last], batch))
        m.backward()
        b.zero_grad(set_to_none=True)

    t_fb, _ = timed(fwd_bwd, 2)
    print(f"fwd+bwd {t_fb:.2f} s", flush=True)
    t_eap, g_eap = timed(lambda: attribute(h, task, method="eap", level="node"), 2)
    t_eap_e, g_edge = timed(lambda: attribute(h, task, method="eap", level="edge"), 1)
    print(f"EAP node {t_eap:.2f} s, edge {t_eap_e:.2f} s", flush=True)
    t_ig, g_ig = timed(lambda: attribute(h, task, method="eap-ig", level="node", ig_steps=5), 1)
    print(f"EAP-IG(5) node {t_ig:.2f} s", flush=True)

    from transformer_lens.tools.analysis import EdgeAttributionConfig, attribution_patch

    def tl_node():
        outs = []
        for i in range(len(batch)):
            s = int(batch.last[i]) + 1
            a, c = int(batch.answer[i]), int(batch.corrupt_answer[i])
            outs.append(attribution_patch(b, batch.clean[i : i + 1, :s], batch.corrupt[i : i + 1, :s],
                                          lambda lg, a=a, c=c: lg[0, -1, a] - lg[0, -1, c],
                                          EdgeAttributionConfig(granularity="node")))
        return outs

    t_tl, _ = timed(tl_node, 1)
    print(f"TL attribution_patch {t_tl:.2f} s", flush=True)
    rows_out = [
        ("fwd+bwd (corrupt batch, metric.backward)", f"{t_fb:.2f} s", ""),
        ("EAP node", f"{t_eap:.2f} s", f"{t_eap / t_fb:.2f}x fwd+bwd (target <= 2.5)"),
        ("EAP edge", f"{t_eap_e:.2f} s", f"{t_eap_e / t_fb:.2f}x fwd+bwd; {g_edge.n_edges} edges"),
        ("TL 4.3 attribution_patch node (per pair)", f"{t_tl:.2f} s", f"{t_tl / t_eap:.1f}x our EAP node (target >= 4)"),
        ("EAP-IG(5) node", f"{t_ig:.2f} s", f"{t_ig / t_fb:.2f}x fwd+bwd (target <= 8)"),
    ]
    if not args.skip_exact:
        t_x, g_x = timed(lambda: attribute(h, task, method="exact", level="node", progress=True), 1)
        x = g_x.node_scores.numpy()
        print(f"exact node {t_x:.1f} s", flush=True)
        rows_out.append(("exact node patching (all writers)", f"{t_x:.1f} s", f"{t_x / t_eap:.0f}x EAP node (target >= 50)"))
        for name, g in (("EAP", g_eap), ("EAP-IG(5)", g_ig)):
            s = g.node_scores.numpy()
            rows_out.append((f"{name} vs exact, node scores", f"Spearman {spearmanr(s, x)[0]:.3f}",
                             f"Pearson {pearsonr(s, x)[0]:.3f}" + (" (target Spearman >= 0.9)" if name != "EAP" else "")))
    print("minimal circuit ...", flush=True)
    t_min, c = timed(lambda: minimal_circuit(h, task, faithfulness=0.8, graph=g_edge), 1)
    rows_out.append(("minimal 0.8-faithful circuit (EAP edges)", f"{c.n_edges} edges",
                     f"{100 * c.n_edges / g_edge.n_edges:.2f}% of {g_edge.n_edges}; faithfulness {c.faithfulness:.3f}; "
                     f"random {c.baselines['random']:.3f}, weight-magnitude {c.baselines['weight_magnitude']:.3f}; "
                     f"{len(c.curve)} ablation passes, {t_min:.1f} s; reached={c.reached}"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows_out.append(("peak RSS", f"{rss:.0f} MiB", ""))
    print(f"clean metric {g_eap.clean_metric:.3f}, corrupt {g_eap.corrupt_metric:.3f}")
    print("| measurement | value | ratio / note |\n|---|---|---|")
    for r in rows_out:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    if args.out:
        import sys

        from circuitforge._provenance import run_info, write_json_atomic

        cmd = "python benchmarks/attribution.py " + " ".join(sys.argv[1:])
        write_json_atomic(args.out, {"format": "circuitforge.bench-attribution/1", "command": cmd.strip(),
                                     "run_info": run_info(), "model": h.identity(), "task": task.identity(),
                                     "table": {"columns": ["measurement", "value", "ratio / note"],
                                               "rows": [list(r) for r in rows_out]}})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
