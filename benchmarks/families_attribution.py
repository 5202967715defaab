"""Attribution on every model family: EAP and EAP-IG against exact activation patching, and cost per step.

    python benchmarks/families_attribution.py [--models smollm2-135m gemma3-270m qwen2.5-0.5b] [--rows 8]
        [--heads 16] [--json docs/results/families_attribution.json]

Per model, on the first ``rows`` rows of its built-in forget slice (counterfactual corruption, logit
difference): exact node patching (the corrupt run with one node's clean output restored) on the input
embedding, every MLP and ``heads`` heads drawn uniformly (seed 0), against node EAP and node EAP-IG(5) on
the same nodes (Spearman and Pearson, 95% bootstrap CI of Spearman over nodes); and the time of one
forward+backward pass on those rows, node EAP, edge EAP and edge EAP-IG(5), each as a multiple of the
forward+backward pass measured in the same run (unembedding only the read position, as attribution does;
one torch thread unless ``OMP_NUM_THREADS`` says otherwise).
"""

import argparse
import random
import sys
import time

import torch

SLICES = {"smollm2-135m": "builtin:forget", "gemma3-270m": "builtin:gemma3-270m/forget",
          "qwen2.5-0.5b": "builtin:qwen2.5-0.5b/forget"}


def timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def measure(h, spec: str, n_rows: int, n_heads: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    from scipy.stats import pearsonr, spearmanr

    from circuitforge.attribution import attribute, encode_task
    from circuitforge.attribution.metrics import logit_diff, reduce
    from circuitforge.data import load_task
    from circuitforge.eval.stats import spearman_ci

    task = load_task(SLICES[spec]).head(n_rows)
    heads = [f"a{layer}.h{k}" for layer in range(h.n_layers) for k in range(h.n_heads)]
    nodes = ["input"] + [f"m{layer}" for layer in range(h.n_layers)] + sorted(random.Random(0).sample(heads, n_heads))
    batch = encode_task(h, task)

    def fwd_bwd() -> None:  # unembedding only the read position, as attribution does
        h.bridge.zero_grad(set_to_none=True)
        reduce(logit_diff(h.logits_at(batch.corrupt, batch.last[:, None])[:, 0], batch)).backward()
        h.bridge.zero_grad(set_to_none=True)

    t_fb = min(timed(fwd_bwd)[0], timed(fwd_bwd)[0])
    t_node, g_eap = timed(lambda: attribute(h, task, method="eap", level="node"))
    t_edge, _ = timed(lambda: attribute(h, task, method="eap", level="edge"))
    t_ig, _ = timed(lambda: attribute(h, task, method="eap-ig", level="edge", ig_steps=5))
    g_ig = attribute(h, task, method="eap-ig", level="node", ig_steps=5)
    t_ex, g_ex = timed(lambda: attribute(h, task, method="exact", level="node", nodes=nodes))
    x = [g_ex.node_score(n) for n in nodes]
    e = [g_eap.node_score(n) for n in nodes]
    i = [g_ig.node_score(n) for n in nodes]
    return {"model": spec, "task": SLICES[spec], "rows": len(task), "nodes": nodes, "exact": x, "eap": e, "eap_ig": i,
            "spearman_eap": spearman_ci(e, x).to_dict(), "pearson_eap": float(pearsonr(e, x)[0]),
            "spearman_eap_ig": float(spearmanr(i, x)[0]),
            "seconds": {"fwd_bwd": t_fb, "eap_node": t_node, "eap_edge": t_edge, "eap_ig5_edge": t_ig, "exact_nodes": t_ex}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(SLICES))
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    from circuitforge.models import load

    out = []
    print("| model | nodes | Spearman EAP vs exact [95% CI] | Pearson | Spearman EAP-IG(5) | fwd+bwd s | "
          "EAP node × | EAP edge × | EAP-IG(5) edge × |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in a.models:
        r = measure(load(spec), spec, a.rows, a.heads)
        out.append(r)
        rho, sec = r["spearman_eap"], r["seconds"]
        fb = sec["fwd_bwd"]
        print(f"| {spec} | {len(r['nodes'])} | {rho['value']:.3f} [{rho['lo']:.3f}, {rho['hi']:.3f}] | "
              f"{r['pearson_eap']:.3f} | {r['spearman_eap_ig']:.3f} | {fb:.2f} | {sec['eap_node'] / fb:.1f} | "
              f"{sec['eap_edge'] / fb:.1f} | {sec['eap_ig5_edge'] / fb:.1f} |", flush=True)
    if a.json:
        from circuitforge._provenance import run_info, write_json_atomic

        write_json_atomic(a.json, {"command": "python " + " ".join(sys.argv), "run_info": run_info(), "models": out})


if __name__ == "__main__":
    main()
