"""Per-model built-in slices: the shipped benchmark rows another model also knows (issue 15).

    python benchmarks/build_slices.py [--models gemma3-270m,qwen2.5-0.5b] [--threads 1]

The shipped built-in files (``circuitforge/data/builtin/*.jsonl``) were selected on SmolLM2-135M-Instruct
(``benchmarks/build_builtin.py``). For another model the same rules are applied to those rows, giving a
slice the model knows, written to ``circuitforge/data/builtin/<model>/<task>.jsonl`` (loaded as
``builtin:<model>/<task>``) with ``slices.json`` beside it (counts, pass rates, base accuracies):

1. the answer's summed log-prob beats every distractor's by at least ``MARGIN`` nats under the model;
2. the corrupt counterpart still works as one under the model's tokenizer: the clean and corrupt prompts
   have the same number of tokens (with the model's BOS) and the answers' first tokens differ (edge
   attribution and the hybrids compare them position by position);
3. the written slice is re-scored with :func:`circuitforge.data.evaluate` (batch 16) and a row that fails
   is dropped (repeated until stable).

So the slices are the intersection of what SmolLM2 and the model know — a subset of what the full build
would give the model — and base accuracy on them is 1.0 by construction (the honest figure is the pass
rate, printed and kept in ``slices.json``). The benchmark's chemistry pool is filtered the same way
(``chemistry_pool``; its paraphrases by rules 1 and 3 only, as they are never attributed), and its
never-known rows the other way round (``chemistry_unknown``: kept when the model does *not* know them, and
re-scored wrong), giving ``circuitforge bench`` the pool ``builtin:<model>``.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MARGIN = 0.1  # nats, as in build_builtin.py
# file → rule: "known" = rules 1–3 below; "known-any" = rules 1 and 3 (rows only ever scored, never
# attributed); "unknown" = the model does not know the row (answer not ahead of every distractor by MARGIN,
# and wrong when re-scored): the benchmark's never-known floor
TASKS = {"forget": "known", "forget_paraphrase": "known", "retain": "known",
         "chemistry_pool": "known", "chemistry_paraphrase": "known-any", "chemistry_unknown": "unknown"}
OUT = Path(__file__).resolve().parents[1] / "circuitforge" / "data" / "builtin"


def build(spec: str) -> dict[str, object]:
    from circuitforge._provenance import run_info, write_json_atomic, write_text_atomic
    from circuitforge.data import evaluate, load_task, task_from_rows
    from circuitforge.data.scoring import continuation_logprobs
    from circuitforge.models import load

    t0 = time.time()
    m = load(spec)
    tok = m.tokenizer
    out_dir = OUT / spec
    report: dict[str, object] = {"model": spec, "margin": MARGIN, "tasks": {}}
    for name, rule in TASKS.items():
        rows = [json.loads(line) for line in (OUT / f"{name}.jsonl").read_text().splitlines() if line.strip()]
        pairs = [(r["prompt"], o) for r in rows for o in (r["answer"], *r["distractors"])]
        lps, _ = continuation_logprobs(m, pairs)
        known, aligned, kept = 0, 0, []
        k = 0
        for r in rows:
            n_opt = 1 + len(r["distractors"])
            la, ld = lps[k], lps[k + 1 : k + n_opt]
            k += n_opt
            ok = all(la - d >= MARGIN for d in ld)
            known += ok
            if rule == "known" and r.get("corrupt_prompt") is not None:
                same_len = m.to_tokens(r["prompt"]).shape[1] == m.to_tokens(r["corrupt_prompt"]).shape[1]
                first = tok(r["answer"], add_special_tokens=False)["input_ids"][:1]
                first_c = tok(r["corrupt_answer"], add_special_tokens=False)["input_ids"][:1]
                al = same_len and bool(first) and first != first_c
            else:
                al = True
            aligned += al
            if (ok and al) if rule != "unknown" else not ok:
                kept.append(r)
        dropped = 0
        while kept:  # rule 3: re-score the slice as written, drop failures until stable
            res = evaluate(m, task_from_rows(kept, f"{spec}/{name}"))
            bad = [i for i, c in enumerate(res.correct) if bool(c) == (rule == "unknown")]
            if not bad:
                break
            dropped += len(bad)
            kept = [r for i, r in enumerate(kept) if i not in set(bad)]
        write_text_atomic(out_dir / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        acc = evaluate(m, load_task(f"builtin:{spec}/{name}"))
        report["tasks"][name] = {"candidates": len(rows), "known": known, "aligned": aligned,  # type: ignore[index]
                                 "kept": len(kept), "dropped_on_rescore": dropped, "accuracy": acc.accuracy,
                                 "mean_answer_logprob": acc.mean_answer_logprob}
        report["tasks"][name]["rule"] = rule  # type: ignore[index]
        print(f"{spec} {name} ({rule}): known {known}/{len(rows)} ({known / len(rows):.0%}), corrupt pair aligned "
              f"{aligned}, kept {len(kept)}, base accuracy {acc.accuracy:.3f} (n {acc.n})", flush=True)
    report["table"] = {
        "columns": ["task", "SmolLM2 rows", "known (margin ≥ 0.1 nats)", "corrupt pair aligned", "kept",
                    "dropped on re-scoring", "base accuracy on the slice"],
        "rows": [[f"builtin:{spec}/{k}", v["candidates"], f"{v['known']} ({v['known'] / v['candidates']:.0%})",
                  v["aligned"], v["kept"], v["dropped_on_rescore"], f"{v['accuracy']:.3f}"]
                 for k, v in report["tasks"].items()]}  # type: ignore[attr-defined]
    report["seconds"] = time.time() - t0
    report["run_info"] = run_info()
    report["command"] = "python benchmarks/build_slices.py --models " + spec
    write_json_atomic(out_dir / "slices.json", report)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gemma3-270m,qwen2.5-0.5b")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    for spec in a.models.split(","):
        build(spec.strip())


if __name__ == "__main__":
    main()
