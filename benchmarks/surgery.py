"""Benchmark: MANSU (neuron- and node-level circuits) and the baselines on SmolLM2-135M, forgetting part
of a domain while keeping the rest.

    python benchmarks/surgery.py [--model smollm2-135m] [--targets 32] [--same 32] [--general 32]
                                 [--methods mansu,mansu-node,graddiff] [--set METHOD:NAME=VALUE] [--augment]
                                 [--domain chemistry|capitals] [--given same_domain,general] [--out FILE.json]

Splits (all from the built-in data, deterministic): ``targets`` facts of ``builtin:forget`` to forget
(evenly spaced rows whose answer has a paraphrase); ``same`` other chemistry facts of ``builtin:forget``
with different answers (same-domain retain); ``general`` rows of ``builtin:retain_general``; the
paraphrases of the targeted facts (``builtin:forget_paraphrase`` rows with a targeted answer). Every method
gets retain = same-domain + general (``--given``: which of the two sets are given; a set not given is still
scored). ``--domain capitals``: targets, same-domain and held-out rows are world capitals
(``builtin:retain_capitals``, evenly spaced, disjoint; no paraphrase set) — issue 16's "new user" case of
forgetting some capitals while keeping others. ``mansu-node`` is MANSU with ``circuit_level=node``. ``--augment``:
every method's forget set is the targets plus their rewordings in templates no evaluation set uses
(``circuitforge.data.augment.CHEMISTRY``; refused if one equals an evaluation prompt), scored as the set
``reworded``; the paraphrase set stays the held-out evaluation of other wordings.

For each method (seed 0): accuracy on the four sets in full precision and after the NF4 round trip
(bitsandbytes, route b), the share of linear parameters in the mask and edited (exact diff), the NF4
code-flip rate of the edited weights (``quant.diff_report``), the stop reason and the wall time of
``unlearn``. Every number is measured; the JSON holds them all.
"""

import argparse
import json
import os
import time

import torch


def _spaced(seq: list[int], n: int) -> list[int]:
    """``n`` entries of ``seq`` evenly spaced over it (all of them when it has at most ``n``)."""
    return [seq[int(k * len(seq) / n)] for k in range(min(n, len(seq)))]


def capital_splits(targets: int, same: int, general: int, heldout: int = 0):  # type: ignore[no-untyped-def]
    """Disjoint evenly spaced sets of world capitals (targets, same-domain retain, held out) and general facts."""
    from circuitforge.data import load_task

    caps, gen = load_task("builtin:retain_capitals"), load_task("builtin:retain_general")
    if targets + same + heldout > len(caps):
        raise SystemExit(f"--domain capitals: {targets} + {same} + {heldout} rows asked, {len(caps)} capitals exist")
    t_idx = _spaced(list(range(len(caps))), targets)
    rest = [i for i in range(len(caps)) if i not in t_idx]
    s_idx = _spaced(rest, same)
    left = [i for i in rest if i not in s_idx]
    h_idx = _spaced(left, heldout) if heldout else []
    g_idx = _spaced(list(range(len(gen))), general)
    out = {"targets": caps.subset(t_idx, name=f"capitals[targets {len(t_idx)}]"),
           "same_domain": caps.subset(s_idx, name=f"capitals[same-domain retain {len(s_idx)}]"),
           "general": gen.subset(g_idx, name=f"retain_general[{len(g_idx)}]")}
    if h_idx:
        out["same_heldout"] = caps.subset(h_idx, name=f"capitals[same-domain held out {len(h_idx)}]")
    return out


def splits(targets: int, same: int, general: int, heldout: int = 0, offset: int = 0):  # type: ignore[no-untyped-def]
    from circuitforge.data import load_task

    forget, para, gen = load_task("builtin:forget"), load_task("builtin:forget_paraphrase"), load_task("builtin:retain_general")
    para_answers = {it.answer for it in para.items}
    cand = [i for i, it in enumerate(forget.items) if it.answer in para_answers]
    step = len(cand) / targets
    t_idx = [cand[(int(k * step) + offset) % len(cand)] for k in range(targets)]  # offset: another split
    t_ans = {forget.items[i].answer for i in t_idx}
    rest = [i for i, it in enumerate(forget.items) if i not in t_idx and it.answer not in t_ans]
    s_idx = _spaced(rest, same)
    g_idx = _spaced(list(range(len(gen))), general)
    p_idx = [i for i, it in enumerate(para.items) if it.answer in t_ans]
    # same-domain facts no method sees (not in the retain set): does sparing the retain rows generalise?
    left = [i for i in rest if i not in s_idx]
    h_idx = _spaced(left, heldout) if heldout else []
    held = {"same_heldout": forget.subset(h_idx, name=f"forget[same-domain held out {len(h_idx)}]")} if h_idx else {}
    return {
        "targets": forget.subset(t_idx, name=f"forget[targets {len(t_idx)}]"),
        "same_domain": forget.subset(s_idx, name=f"forget[same-domain retain {len(s_idx)}]"),
        "general": gen.subset(g_idx, name=f"retain_general[{len(g_idx)}]"),
        "paraphrase": para.subset(p_idx, name=f"forget_paraphrase[of targets {len(p_idx)}]"),
        **held,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--targets", type=int, default=32)
    ap.add_argument("--same", type=int, default=32)
    ap.add_argument("--general", type=int, default=32)
    ap.add_argument("--offset", type=int, default=0, help="shift the evenly spaced targets: another split")
    ap.add_argument("--heldout", type=int, default=0,
                    help="same-domain rows kept out of every method's retain set, evaluated as same_heldout")
    ap.add_argument("--methods", default="mansu,mansu-node,graddiff")
    ap.add_argument("--set", action="append", default=[], help="METHOD:NAME=VALUE")
    ap.add_argument("--augment", action="store_true",
                    help="train on the targets plus their rewordings in templates no evaluation set uses")
    ap.add_argument("--domain", choices=("chemistry", "capitals"), default="chemistry",
                    help="where targets, same-domain and held-out rows come from")
    ap.add_argument("--given", default="same_domain,general",
                    help="the sets every method is given as retain rows (the others are only scored)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--table", action="append", default=None,
                    help="only print the markdown table of this results JSON (repeat to merge runs on the same sets)")
    args = ap.parse_args()
    if args.table:
        print(table(merge(args.table)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    from circuitforge.data import Task, evaluate, load_task
    from circuitforge.models import load
    from circuitforge.quant import diff_report, quantized_copy
    from circuitforge.surgery import parse_settings, settings_class, unlearn

    base = load(args.model)
    if args.domain == "capitals":
        if args.offset or args.augment:
            raise SystemExit("--domain capitals: --offset and --augment are for the chemistry rows")
        sets = capital_splits(args.targets, args.same, args.general, args.heldout)
    else:
        sets = splits(args.targets, args.same, args.general, args.heldout, args.offset)
    given = [g for g in args.given.split(",") if g]
    if not given or any(g not in ("same_domain", "general") for g in given):
        raise SystemExit("--given: a comma list of same_domain, general")
    retain = Task(f"retain[{' + '.join(given)}]", "cloze", tuple(it for g in given for it in sets[g].items), "benchmark")
    forget = sets["targets"]
    if args.augment:
        from circuitforge.data.augment import reworded

        evals = (load_task("builtin:forget_paraphrase"), load_task("builtin:chemistry_paraphrase"), *sets.values())
        sets["reworded"] = reworded(forget, avoid=evals, name=f"targets reworded[{len(forget)} facts]")
        forget = Task(f"forget[targets + reworded {len(sets['reworded'])}]", "cloze",
                      forget.items + sets["reworded"].items, "benchmark")

    def accs(h, tag: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
        return {f"{k}_{tag}": evaluate(h, t).accuracy for k, t in sets.items()}

    out: dict = {"model": args.model, "command": "python benchmarks/surgery.py " + " ".join(
        f"--{k} {v}" for k, v in (("targets", args.targets), ("same", args.same), ("general", args.general),
                                  ("heldout", args.heldout), ("offset", args.offset), ("methods", args.methods))) + "".join(f" --set {s}" for s in args.set)
        + (" --augment" if args.augment else "") + (f" --domain {args.domain}" if args.domain != "chemistry" else "")
        + (f" --given {args.given}" if args.given != "same_domain,general" else ""),
        "given": given,
        "sets": {k: {"rows": len(t), "sha256": t.sha256} for k, t in sets.items()}, "results": []}
    q = quantized_copy(base, "nf4")
    row0 = {"method": "base", **accs(base, "fp"), **accs(q, "nf4")}
    out["results"].append(row0)
    print(json.dumps(row0), flush=True)
    del q
    for m in args.methods.split(","):
        method = "mansu" if m.startswith("mansu") else m
        pairs = [s.split(":", 1)[1] for s in args.set if s.startswith(m + ":")]
        kw = parse_settings(settings_class(method), pairs)
        if m == "mansu-node":
            kw.setdefault("circuit_level", "node")
        t0 = time.perf_counter()
        res = unlearn(base, forget, retain, method=method, seed=0, **kw)
        wall = time.perf_counter() - t0
        q = quantized_copy(res.handle, "nf4")
        d = diff_report(base, res.handle, "nf4", per_tensor=False)
        n_linear = sum(p.numel() for n, p in base.named_parameters().items()
                       if n.startswith("model.layers.") and n.endswith(".weight") and p.dim() == 2)
        n_mask = res.mask_stats.get("n_mask", n_linear)
        row = {"method": m, "settings": {k: v for k, v in kw.items() if k != "circuit_nodes"},
               "stop_reason": res.stop_reason, "steps": len(res.loss_history) - 1,
               **accs(res.handle, "fp"), **accs(q, "nf4"),
               "mask_share_linear": n_mask / n_linear, "edited_share_linear": res.mask_stats["n_changed"] / n_linear,
               "n_edited": res.mask_stats["n_changed"], "code_flip_rate": d["code_flip_rate"],
               "median_binwidth_to_update_ratio": d["median_binwidth_to_update_ratio"], "wall_s": wall,
               "history": res.loss_history}
        for k in sets:
            row[f"{k}_drop_fp"] = row0[f"{k}_fp"] - row[f"{k}_fp"]
            row[f"{k}_drop_nf4"] = row0[f"{k}_nf4"] - row[f"{k}_nf4"]
        row["nf4_gap"] = row["targets_nf4"] - row["targets_fp"]  # > 0: NF4 brings forgotten facts back
        if method == "mansu":
            c = res.diagnostics["circuit"]
            row["circuit"] = {k: c.get(k) for k in ("level", "faithfulness", "reached", "message", "n_heads", "n_neurons",
                                                  "neurons_per_layer", "curve", "contrast")}
            row["circuit"]["n_components"] = len(c["nodes"])
            row["retain_output_change_max"] = res.diagnostics["retain_output_change_max"]
            row["retain_output_bound"] = res.diagnostics["retain_output_bound"]
        out["results"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("history", "circuit")}), flush=True)
        del q, res
        if args.out:
            from circuitforge._provenance import write_json_atomic

            write_json_atomic(args.out, out)
    print()
    print(table(out))


def merge(paths: list[str]) -> dict:  # type: ignore[type-arg]
    """One results document from several runs on the same row sets (the first run's base row is kept)."""
    docs = []
    for p in paths:
        with open(p) as f:
            docs.append(json.load(f))
    first = docs[0]
    for d in docs[1:]:
        if d["sets"] != first["sets"] or d["model"] != first["model"]:
            raise SystemExit(f"--table: the runs were made on different models or row sets ({paths[0]} vs another)")
    rows = first["results"] + [r for d in docs[1:] for r in d["results"] if r["method"] != "base"]
    return {**first, "results": rows}


def table(out: dict) -> str:  # type: ignore[type-arg]
    """The markdown table of a results JSON (what docs/surgery.md shows)."""
    given = out.get("given", ["same_domain", "general"])

    def hdr(k: str, label: str) -> str:
        return label + ("" if k in given else " (not given)")

    lines = [f"model {out['model']}; " + ", ".join(f"{k} {v['rows']} rows" for k, v in out["sets"].items())
             + f"; given as retain: {' + '.join(given)}; NF4 = bitsandbytes round trip", "",
             f"| method | targets fp / NF4 | paraphrases fp / NF4 | {hdr('same_domain', 'same-domain retain')} fp / NF4 "
             f"| {hdr('general', 'general retain')} fp / NF4 "
             + ("| same-domain held out fp / NF4 " if "same_heldout" in out["sets"] else "")
             + ("| reworded targets (trained on) fp / NF4 " if "reworded" in out["sets"] else "")
             + "| mask / edited (share of linear) | code-flip rate | retain-output change (max / bound) | stop | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if "same_heldout" in out["sets"] else "")
             + ("---|" if "reworded" in out["sets"] else "")]
    for r in out["results"]:
        def pair(k: str, r: dict = r) -> str:  # type: ignore[type-arg]
            return "—" if k + "_fp" not in r else f"{r[k + '_fp']:.3f} / {r[k + '_nf4']:.3f}"

        # a method without a mask trains every parameter (embeddings too: its "mask" exceeds the linear weights)
        mask = "" if "mask_share_linear" not in r else "all" if r["mask_share_linear"] >= 1 else f"{r['mask_share_linear']:.4f}"
        share = "—" if not mask else f"{mask} / {r['edited_share_linear']:.5f}"
        flip = "—" if r.get("code_flip_rate") is None else f"{r['code_flip_rate']:.3f}"
        oc = "—" if "retain_output_change_max" not in r else f"{r['retain_output_change_max']:.4f} / {r['retain_output_bound']}"
        wall = "—" if "wall_s" not in r else f"{r['wall_s']:.0f}"
        held = f"| {pair('same_heldout')} " if "same_heldout" in out["sets"] else ""
        held += f"| {pair('reworded')} " if "reworded" in out["sets"] else ""
        name = r["method"] + (" (" + ", ".join(f"{k}={v}" for k, v in r["settings"].items()) + ")" if r.get("settings") else "")
        lines.append(f"| {name} | {pair('targets')} | {pair('paraphrase')} | {pair('same_domain')} | {pair('general')} "
                     f"{held}| {share} | {flip} | {oc} | {r.get('stop_reason', '—')} | {wall} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
