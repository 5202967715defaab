"""`circuitforge bench --workers`: cells computed by one process against two, side by side (issue 13).

Both runs start from copies of a finished benchmark folder's cached work — the baseline sweep, each
split's base outcomes and circuit — without its cells, so they compute exactly the same cells and nothing
else: the selected methods on the first ``--splits`` splits. They run one after the other on this machine
(nothing else should run: pause other jobs), and the ratio of their wall times is the speed-up of
``--workers N`` for the cell phase. Every cell's accuracies are compared between the two runs
(deterministic methods must agree exactly; seeded ones may differ by float summation order with a
different torch thread count).

    python benchmarks/bench_workers.py --config benchmarks/unlearning.toml --from docs/results/unlearning \
        --methods graddiff,mansu --splits 2 --workers 2 --out docs/results/bench_workers_smollm2.json

The JSON also projects the committed benchmark's cell phase on this machine (:func:`projection`; a
projection, labelled as one; the sweep and per-split circuits come on top). ``--reproject`` recomputes it
from a JSON's stored runs without running anything.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CACHED = ("sweep", "sweep.json", "splits", "circuits", "base_circuit.json")


def prepare(src: Path, dst: Path) -> None:
    """``dst`` holds ``src``'s cached work (sweep, split outcomes, circuits) and no cells."""
    dst.mkdir(parents=True)
    for name in CACHED:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, dst / name)
        elif p.exists():
            shutil.copy2(p, dst / name)


def run(config: str, out: Path, methods: str, splits: int, workers: int) -> float:
    cmd = [sys.executable, "-c", "from circuitforge.cli import main; main()", "bench", "--config", config, "--out", str(out),
           "--methods", methods, "--splits", str(splits), "--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench --workers {workers} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return wall


def cells(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for p in sorted((out / "cells").glob("*.json")):
        c = json.loads(p.read_text())
        found[p.stem] = {"seconds": c["seconds"], "unlearn_seconds": c["unlearn_seconds"],
                         "accuracies": c["scorecard"]["accuracies"], "relearn": c["relearn"]["recovery"]}
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="benchmarks/unlearning.toml")
    ap.add_argument("--from", dest="src", default="docs/results/unlearning")
    ap.add_argument("--methods", default="graddiff,mansu")
    ap.add_argument("--splits", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--reproject", action="store_true",
                    help="only recompute the projection of the --out JSON from its stored runs (no benchmark run)")
    args = ap.parse_args()
    src = Path(args.src)
    if args.reproject:
        if not args.out or not Path(args.out).is_file():
            raise SystemExit("--reproject needs --out naming an existing bench_workers JSON")
        from circuitforge._provenance import write_json_atomic

        doc = json.loads(Path(args.out).read_text())
        doc["projection"] = projection(doc, src)
        report(doc)
        write_json_atomic(args.out, doc)
        return
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in (1, args.workers):
            d = Path(tmp) / f"w{w}"
            prepare(src, d)
            wall = run(args.config, d, args.methods, args.splits, w)
            runs[str(w)] = {"workers": w, "wall_s": wall, "cells": cells(d)}
            print(f"--workers {w}: {wall:.0f} s for {len(runs[str(w)]['cells'])} cells", flush=True)
    one, many = runs["1"], runs[str(args.workers)]
    same = {k: one["cells"][k]["accuracies"] == many["cells"].get(k, {}).get("accuracies") for k in one["cells"]}
    speedup = one["wall_s"] / many["wall_s"]
    doc = {"format": "circuitforge.bench_workers/1",
           "command": "python benchmarks/bench_workers.py " + " ".join(
               f"--{k} {v}" for k, v in (("config", args.config), ("from", args.src), ("methods", args.methods),
                                         ("splits", args.splits), ("workers", args.workers))),
           "cores": os.cpu_count(), "runs": runs, "speedup": speedup, "same_accuracies": same}
    doc["projection"] = projection(doc, src)
    print(f"speed-up of --workers {args.workers}: {speedup:.2f}x; accuracies identical for "
          f"{sum(same.values())} of {len(same)} cells")
    report(doc)
    if args.out:
        from circuitforge._provenance import write_json_atomic

        write_json_atomic(args.out, doc)


def projection(doc: dict[str, Any], src: Path) -> dict[str, Any]:
    """The whole committed benchmark's cell phase on this machine: its total cell seconds scaled by how much
    faster the measured cells ran here in one process than the same method×split cells did in the committed
    run (so the costlier methods keep their weight), then divided by the measured speed-up."""
    committed = {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((src / "cells").glob("*.json"))}
    one = doc["runs"]["1"]["cells"]
    here = sum(c["seconds"] for c in one.values())
    there = sum(committed[k] for k in one)
    total = sum(committed.values())
    return {"what": "committed run's total cell seconds × (these cells' single-process seconds here ÷ the same "
                    "cells' seconds in the committed run) ÷ measured speed-up (a projection)",
            "n_cells": len(committed), "committed_cell_s": total, "scale": here / there,
            "cells_one_process_s": total * here / there, "cells_workers_s": total * here / there / doc["speedup"]}


def report(doc: dict[str, Any]) -> None:
    p = doc["projection"]
    print(f"projection: {p['n_cells']} committed cells, {p['committed_cell_s']:.0f} s x {p['scale']:.3f} = "
          f"{p['cells_one_process_s'] / 3600:.2f} h in one process, {p['cells_workers_s'] / 3600:.2f} h with "
          f"--workers {max(r['workers'] for r in doc['runs'].values())}")

if __name__ == "__main__":
    main()
