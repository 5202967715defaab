"""Benchmark: wall time and peak memory of ``circuitforge demo`` (targets: ≤ 6 min, ≤ 3 GB peak RSS on
2 CPU cores), measured on a child process, with the time of each step from its ``demo.json``.

    python benchmarks/demo.py [--quick] [--out docs/results/demo_smollm2.json]

Writes the results JSON that ``scripts/docs_tables.py`` renders into the README. The load average before
and after is recorded: on a shared machine the wall time is an upper bound, the peak RSS is not affected.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the tiny trained model (the test-suite demo)")
    ap.add_argument("--out", default=None, help="results JSON (default docs/results/demo_<model>.json)")
    args = ap.parse_args()
    out = args.out or f"docs/results/demo_{'tiny' if args.quick else 'smollm2'}.json"
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cf-demo-bench-") as tmp:
        cmd = [sys.executable, "-m", "circuitforge", "demo", "--out", str(Path(tmp) / "demo")]
        cmd += ["--quick"] if args.quick else []
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"demo failed (exit {p.returncode}): {p.stderr[-2000:]}")
        summary = json.loads((Path(tmp) / "demo" / "demo.json").read_text())
    rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    load1 = os.getloadavg()
    rows: list[list[object]] = [
        ["wall time (whole command)", f"{wall:.0f} s", f"{'meets' if wall <= 360 else 'misses'} the 6 min target"],
        ["peak RSS", f"{rss_gib:.2f} GiB", f"{'meets' if rss_gib <= 3 else 'misses'} the 3 GB target"],
        ["load average (1 min) before / after", f"{load0[0]:.1f} / {load1[0]:.1f}", f"{os.cpu_count()} CPU cores"],
    ]
    peaks = summary.get("peak_rss_gib_after", {})
    rows += [[f"step: {k}", f"{v:.0f} s", f"peak RSS after it {peaks[k]:.2f} GiB" if k in peaks else ""]
             for k, v in summary["timings"].items()]
    b = summary["base"]["accuracy"]
    rows.append(["base: forget fp / NF4, retain fp / NF4, paraphrase",
                 f"{b['forget']:.2f} / {b['forget_nf4']:.2f}, {b['retain']:.2f} / {b['retain_nf4']:.2f}, {b['paraphrase']:.2f}", ""])
    for m, d in summary["methods"].items():
        a = d["accuracy"]
        rows.append([f"{m}: forget fp / NF4, retain fp / NF4, paraphrase",
                     f"{a['forget']:.2f} / {a['forget_nf4']:.2f}, {a['retain']:.2f} / {a['retain_nf4']:.2f}, {a['paraphrase']:.2f}",
                     f"stop {d.get('stop_reason')}, weights changed {d.get('changed_share') or 0:.2e}"])
        props = d["scorecard"].get("properties", {})
        calls = ", ".join(f"{k} {'pass' if p['pass'] else 'fail'}" + (f" (CI: {p['call']})" if p.get("call") else "")
                          for k, p in props.items())
        rows.append([f"{m}: verdict", d["cad"]["verdict"],
                     f"all four properties pass: {'yes' if d['scorecard']['pass'] else 'no'}" + (f" — {calls}" if calls else "")])
        rl = d.get("relearn")
        if rl and rl.get("recovery") is not None:   # the attack verify runs by default (demos since 2026-12-03)
            ci = f" [{rl['ci'][0]:.2f}, {rl['ci'][1]:.2f}]" if rl.get("ci") else ""
            rows.append([f"{m}: relearning recovery", f"{rl['recovery']:.2f}{ci}",
                         f"gate ≤ {rl['threshold']:.2f}: {'pass' if rl['pass'] else 'fail'} (CI: {rl['call']})"])
    from circuitforge._provenance import run_info, write_json_atomic

    command = ("python benchmarks/demo.py " + " ".join(sys.argv[1:])).strip()
    write_json_atomic(out, {"format": "circuitforge.bench-demo/1", "command": command, "run_info": run_info(),
                            "wall_seconds": wall, "peak_rss_gib": rss_gib, "model": summary["model"],
                            "table": {"columns": ["measurement", "value", "note"], "rows": rows}})
    for r in rows:
        print(" | ".join(map(str, r)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
