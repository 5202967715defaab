"""Scoring speed against the number of sequences per forward pass (``circuitforge.data.scoring.BATCH``).

    python benchmarks/eval_batch.py [--model smollm2-135m] [--tasks builtin:forget builtin:retain]
        [--batch 8 16 32 64] [--reps 2]

Scores every task with ``evaluate(handle, task, batch_size=b)`` for each ``b``, the sizes interleaved within
each repetition (a noisy machine slows all alike), and prints the median seconds, the ratio to the library's
default, and whether every row's verdict equals the default's (max |Δ log-prob| beside it).
"""

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=["builtin:forget", "builtin:retain"])
    ap.add_argument("--batch", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()

    from circuitforge.data import evaluate, load_task
    from circuitforge.data.scoring import BATCH
    from circuitforge.models import load

    h = load(a.model)
    tasks = [load_task(t) for t in a.tasks]
    evaluate(h, tasks[0].head(8))   # warm-up
    ref = [evaluate(h, t, batch_size=BATCH) for t in tasks]
    secs: dict[int, list[float]] = {b: [] for b in a.batch}
    same: dict[int, tuple[bool, float]] = {}
    for r in range(a.reps):
        for b in (a.batch if r % 2 == 0 else a.batch[::-1]):
            t0 = time.perf_counter()
            out = [evaluate(h, t, batch_size=b) for t in tasks]
            secs[b].append(time.perf_counter() - t0)
            same[b] = (all(o.correct == x.correct for o, x in zip(out, ref, strict=True)),
                       max(abs(p - q) for o, x in zip(out, ref, strict=True)
                           for p, q in zip(o.answer_logprob, x.answer_logprob, strict=True)))
    base = statistics.median(secs[BATCH]) if BATCH in secs else None
    print(f"{a.model}: {' + '.join(f'{t.name} ({len(t)})' for t in tasks)}, medians of {a.reps} repetitions")
    print("| sequences per pass | seconds | ÷ default's | verdicts as the default's | max Δ log-prob |")
    print("|---|---|---|---|---|")
    for b in a.batch:
        m = statistics.median(secs[b])
        ratio = f"{m / base:.2f}" if base else "-"
        print(f"| {b}{' (default)' if b == BATCH else ''} | {m:.1f} | {ratio} | {same[b][0]} | {same[b][1]:.1e} |")


if __name__ == "__main__":
    main()
