"""``circuitforge demo``: the whole pipeline on the embedded model, one HTML report.

The pipeline is :func:`circuitforge.eval.demo.run_demo`; this command parses options, prints progress
(a live spinner on a terminal, plain timestamped lines in a log), renders ``report.html`` with
:func:`circuitforge.viz.demo_report.demo_report` and prints the summary table.
"""

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from circuitforge.cli._common import Device, Dtype, app, check_device_dtype, console, out


def _progress() -> Any:
    """``progress(step, message)`` printing one flushed line per event with the elapsed time."""
    t0 = time.time()

    def say(step: str, msg: str) -> None:
        line = f"[{time.time() - t0:7.1f} s] {step}: {msg}"
        if console.is_terminal:
            console.print(line, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)

    return say


@app.command("demo")
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for report.html and demo.json")] = Path("circuitforge-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="tiny trained model, small settings (seconds)")] = False,
    baseline: Annotated[str, typer.Option(help="gradient baseline to compare with MANSU")] = "ga",
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output folder's files")] = False,
    device: Device = "cpu",
    dtype: Dtype = "float32",
) -> None:
    """The main job: find the forget circuit, unlearn it with MANSU and a baseline, check NF4, run CAD, report.

    Writes report.html (self-contained), demo.json (every number, with settings, date, commit and versions),
    circuit.json (the base forget circuit) and cad-<method>.json (the CAD evidence per method).
    """
    from circuitforge._provenance import write_text_atomic
    from circuitforge.eval.demo import DemoConfig, run_demo
    from circuitforge.viz.demo_report import demo_report

    check_device_dtype(device, dtype)
    res = run_demo(out_dir, DemoConfig.make(quick, baseline, seed, device, dtype), overwrite, progress=_progress())
    s = res.summary
    write_text_atomic(out_dir / "report.html", demo_report(s, res.circuit, res.cad))
    t = Table(title=f"circuitforge demo on {s['model']} ({s['seconds']:.0f} s)",
              caption="forget/retain/para: accuracy in full precision; NF4: forget accuracy after NF4; "
                      "bin/Δθ: median NF4 bin width ÷ |update|; flips: NF4 code-flip rate; "
                      "4/4: all four properties pass")
    for col in ("method", "forget", "NF4", "retain", "para", "bin/Δθ", "flips", "CAD verdict", "4/4"):
        t.add_column(col, no_wrap=True)
    b = s["base"]["accuracy"]
    t.add_row("base", f"{b['forget']:.2f}", f"{b['forget_nf4']:.2f}", f"{b['retain']:.2f}", f"{b['paraphrase']:.2f}", "", "", "", "")
    for name, m in s["methods"].items():
        a = m["accuracy"]
        ratio = m["median_binwidth_to_update_ratio"]
        flips = m["code_flip_rate"]
        t.add_row(name, f"{a['forget']:.2f}", f"{a['forget_nf4']:.2f}", f"{a['retain']:.2f}", f"{a['paraphrase']:.2f}",
                  "-" if ratio is None else f"{ratio:.3g}", "-" if flips is None else f"{flips:.3f}", m["cad"]["verdict"],
                  "PASS" if m["scorecard"]["pass"] else "FAIL")
    out.print(t, width=out.width if out.is_terminal else max(out.width, 110))  # logs and CI: do not truncate
    console.print(f"report: {out_dir / 'report.html'}")
