"""``circuitforge demo``: the whole pipeline on the embedded model, one HTML report.

find the forget circuit → unlearn with MANSU and a gradient baseline → NF4 survival and bin-width
diagnostics for both → CAD on both → report (circuit, circuit diff, scorecards, NF4 survival) + JSON.
``--quick`` runs the same steps on the tiny trained model with small settings (used by the tests).
"""

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from circuitforge.cli._common import app, console, out


def run_demo(out_dir: Path, quick: bool, baseline: str = "ga", seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """The demo as a function (the CLI wraps it). Returns the summary dict written to ``demo.json``."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from circuitforge._provenance import versions, write_json_atomic, write_text_atomic
    from circuitforge.cad import CADSettings, cad
    from circuitforge.circuits import minimal_circuit
    from circuitforge.data import evaluate, load_task
    from circuitforge.errors import CircuitForgeError
    from circuitforge.eval.scorecard import Property, Scorecard, Thresholds
    from circuitforge.models import load
    from circuitforge.quant import diff_report, quantized_copy
    from circuitforge.surgery import unlearn
    from circuitforge.viz.cad import plot_cad_null, plot_circuit_diff
    from circuitforge.viz.circuit import plot_circuit
    from circuitforge.viz.report import html_report, plot_scorecard

    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise CircuitForgeError(f"{out_dir}: exists and is not empty (pass --overwrite)")
    model = "tiny-facts" if quick else "smollm2-135m"
    prefix = "tiny-facts:" if quick else "builtin:"
    n_forget, n_retain, n_cad = (48, 48, 16) if quick else (64, 64, 24)
    ig = 3 if quick else 5
    t_start = time.time()
    summary: dict[str, Any] = {"format": "circuitforge.demo/1", "model": model, "quick": quick, "seed": seed,
                               "versions": versions(), "methods": {}, "timings": {}}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as prog:
        def step(desc: str) -> Any:
            return prog.add_task(desc, total=None)

        def done(tid: Any, key: str, t0: float) -> None:
            summary["timings"][key] = round(time.time() - t0, 1)
            prog.update(tid, description=f"[green]✓[/] {prog.tasks[tid].description} ({time.time() - t0:.0f} s)")
            prog.stop_task(tid)

        t0 = time.time()
        tid = step(f"loading {model} and the built-in tasks")
        base = load(model)
        forget = load_task(prefix + "forget").head(n_forget)
        retain = load_task(prefix + "retain").head(n_retain)
        para = load_task(prefix + "forget_paraphrase").head(n_forget)
        cad_task = forget.head(n_cad)
        done(tid, "load", t0)

        t0 = time.time()
        tid = step("base model accuracies (fp and NF4)")
        base_q = quantized_copy(base, "nf4")
        base_acc = {"forget": evaluate(base, forget).accuracy, "retain": evaluate(base, retain).accuracy,
                    "paraphrase": evaluate(base, para).accuracy, "forget_nf4": evaluate(base_q, forget).accuracy,
                    "retain_nf4": evaluate(base_q, retain).accuracy}
        summary["base"] = {"identity": base.identity(), "accuracy": base_acc}
        done(tid, "base_eval", t0)

        t0 = time.time()
        tid = step(f"finding the forget circuit (EAP-IG({ig}), faithfulness ≥ 0.8)")
        circuit = minimal_circuit(base, cad_task, faithfulness=0.8, method="eap-ig", ig_steps=ig, baselines=True)
        summary["circuit"] = {"edges": circuit.n_edges, "nodes": sorted(circuit.nodes),
                              "faithfulness": circuit.faithfulness, "reached": circuit.reached,
                              "message": circuit.message, "baselines": circuit.baselines}
        done(tid, "circuit", t0)

        th = Thresholds()
        figures: list[tuple[str, Any]] = [("The forget circuit of the base model", plot_circuit(circuit))]
        for method in ("mansu", baseline):
            t0 = time.time()
            tid = step(f"unlearning with {method}")
            res = unlearn(base, forget, retain, method=method, seed=seed, circuit=circuit) if method == "mansu" \
                else unlearn(base, forget, retain, method=method, seed=seed)
            edited = res.handle
            done(tid, f"unlearn_{method}", t0)

            t0 = time.time()
            tid = step(f"{method}: NF4 survival and bin-width diagnostics")
            q = quantized_copy(edited, "nf4")
            acc = {"forget": evaluate(edited, forget).accuracy, "retain": evaluate(edited, retain).accuracy,
                   "paraphrase": evaluate(edited, para).accuracy, "forget_nf4": evaluate(q, forget).accuracy,
                   "retain_nf4": evaluate(q, retain).accuracy}
            diag = diff_report(base, edited, "nf4")
            done(tid, f"quant_{method}", t0)

            t0 = time.time()
            tid = step(f"{method}: circuit attribution divergence")
            c = cad(base, edited, cad_task, circuit=circuit, settings=CADSettings(method="eap-ig", ig_steps=ig))
            done(tid, f"cad_{method}", t0)

            drop, rdrop, gap = base_acc["forget"] - acc["forget"], base_acc["retain"] - acc["retain"], acc["forget_nf4"] - acc["forget"]
            card = Scorecard(base.identity(), edited.identity(),
                             Property(drop, th.min_forget_drop, drop >= th.min_forget_drop),
                             Property(rdrop, th.max_retain_drop, rdrop <= th.max_retain_drop),
                             Property(gap, th.max_ptq_gap, gap <= th.max_ptq_gap, {"scheme": "nf4"}),
                             Property(c.z, th.cad_z, c.verdict == "erasure", {"verdict": c.verdict}),
                             c.summary(), acc, th, {"forget": forget.identity(), "retain": retain.identity()})
            summary["methods"][method] = {
                "accuracy": acc, "scorecard": card.to_dict(), "cad": c.summary(),
                "median_binwidth_to_update_ratio": diag.get("median_binwidth_to_update_ratio"),
                "code_flip_rate": diag.get("code_flip_rate"), "changed_share": diag.get("changed_share"),
                "stop_reason": getattr(res, "stop_reason", None),
            }
            figures += [(f"{method}: scorecard", plot_scorecard(card.to_dict()["properties"], f"{method}: four properties")),
                        (f"{method}: circuit diff", plot_circuit_diff(c.to_dict())),
                        (f"{method}: CAD vs its null", plot_cad_null(c.mechanistic_upstream["null"], c.value, c.z))]

    figures.insert(1, ("NF4 survival: forget accuracy in full precision and after NF4", _survival_figure(summary)))
    summary["seconds"] = round(time.time() - t_start, 1)
    rows = [("model", model), ("total time", f"{summary['seconds']:.0f} s"),
            ("circuit", f"{circuit.n_edges} edges, faithfulness {circuit.faithfulness:.3f}")]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "report.html", html_report("circuitforge demo", figures, rows))
    write_json_atomic(out_dir / "demo.json", summary)
    circuit.to_json(out_dir / "circuit.json")
    return summary


def _survival_figure(summary: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    names = ["base", *summary["methods"]]
    accs = [summary["base"]["accuracy"], *[m["accuracy"] for m in summary["methods"].values()]]
    fig = go.Figure([go.Bar(x=names, y=[a["forget"] for a in accs], name="forget, full precision", marker_color="#1f77b4"),
                     go.Bar(x=names, y=[a["forget_nf4"] for a in accs], name="forget, NF4", marker_color="#ff7f0e"),
                     go.Bar(x=names, y=[a["retain"] for a in accs], name="retain, full precision", marker_color="#2ca02c")])
    fig.update_layout(barmode="group", yaxis={"title": "accuracy", "range": [0, 1.05]}, template="plotly_white",
                      height=380, legend={"orientation": "h", "y": -0.2})
    return fig


@app.command("demo")
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for report.html and demo.json")] = Path("circuitforge-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="tiny trained model, small settings (seconds)")] = False,
    baseline: Annotated[str, typer.Option(help="gradient baseline to compare with MANSU")] = "ga",
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output folder's files")] = False,
) -> None:
    """The main job: find the forget circuit, unlearn it with MANSU and a baseline, check NF4, run CAD, report.

    Writes report.html (self-contained), demo.json (every number) and circuit.json (the base forget circuit).
    """
    s = run_demo(out_dir, quick, baseline, seed, overwrite)
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
