"""Shared-prefix packed scoring (``circuitforge.data.packing``) against one sequence per option, side by side.

    python benchmarks/eval_packing.py [--model smollm2-135m] [--tasks builtin:forget builtin:retain]
        [--batch 16 32 64] [--reps 3] [--json PATH]

Scores every task unpacked (``BATCH`` sequences a pass, the scoring before packing) and packed at each
``--batch`` size, the modes interleaved within each repetition and their order reversed every other one (a
noisy machine slows all alike). Prints the tokens each mode runs, the median seconds, the ratio to the
unpacked default, and whether every row's verdict equals the unpacked one's (max |Δ log-prob| beside it).
"""

import argparse
import statistics
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=["builtin:forget", "builtin:retain"])
    ap.add_argument("--batch", nargs="+", type=int, default=[16, 32, 64])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import circuitforge.data.scoring as scoring
    from circuitforge.data import evaluate, load_task
    from circuitforge.data.packing import pack
    from circuitforge.models import load
    from circuitforge.surgery.objectives import _pairs

    h = load(a.model)
    tasks = [load_task(t) for t in a.tasks]
    window = scoring.pack_window
    if window(h, None) is None:
        raise SystemExit(f"{a.model}: packed scoring is not used on this architecture")

    def tokens(packed: bool) -> int:
        n = 0
        for t in tasks:
            for it in t.items:   # every (context, option) pair evaluate scores for the row
                enc = [scoring.encode(h, c, o) for c, o in _pairs(it, True)]
                n += len(pack(enc, list(range(len(enc)))).tokens) if packed else \
                    sum(len(x) for x in {tuple(ids[:-1]) for ids, _ in enc})
        return n

    def run(mode: tuple[str, int]) -> list:  # type: ignore[type-arg]
        kind, b = mode
        scoring.pack_window = window if kind == "packed" else (lambda *x: None)
        try:
            return [evaluate(h, t, batch_size=b) for t in tasks]
        finally:
            scoring.pack_window = window

    default = ("unpacked", scoring.BATCH)
    modes = [default, *(("packed", b) for b in a.batch)]
    run(("packed", scoring.BATCH))   # warm-up
    ref = run(default)
    secs: dict[tuple[str, int], list[float]] = {m: [] for m in modes}
    same: dict[tuple[str, int], tuple[bool, float]] = {}
    for r in range(a.reps):
        for m in (modes if r % 2 == 0 else modes[::-1]):
            t0 = time.perf_counter()
            out = run(m)
            secs[m].append(time.perf_counter() - t0)
            same[m] = (all(o.correct == x.correct for o, x in zip(out, ref, strict=True)),
                       max(abs(p - q) for o, x in zip(out, ref, strict=True)
                           for p, q in zip(o.answer_logprob, x.answer_logprob, strict=True)))
    base = statistics.median(secs[default])
    n_tok = {"unpacked": tokens(False), "packed": tokens(True)}
    print(f"{a.model}: {' + '.join(f'{t.name} ({len(t)})' for t in tasks)}, medians of {a.reps} repetitions; "
          f"tokens run: unpacked {n_tok['unpacked']}, packed {n_tok['packed']}")
    print("| scoring | sequences per pass | seconds | ÷ unpacked | verdicts as unpacked | max Δ log-prob |")
    print("|---|---|---|---|---|---|")
    rows = []
    for m in modes:
        med = statistics.median(secs[m])
        rows.append({"mode": m[0], "batch": m[1], "seconds": secs[m], "median": med, "ratio": med / base,
                     "same_verdicts": same[m][0], "max_abs_dlogprob": same[m][1]})
        print(f"| {m[0]} | {m[1]} | {med:.1f} | {med / base:.2f} | {same[m][0]} | {same[m][1]:.1e} |")
    if a.json:
        from circuitforge._provenance import run_info, write_json_atomic

        write_json_atomic(a.json, {"command": "python " + " ".join(sys.argv), "run_info": run_info(), "model": a.model,
                                   "tasks": {t.name: len(t) for t in tasks}, "tokens": n_tok, "reps": a.reps,
                                   "modes": rows})


if __name__ == "__main__":
    main()
