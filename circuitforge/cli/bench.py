"""``circuitforge bench``: every unlearning method × resampled split, scored through ``assess`` with CIs,
plus same-domain retain, targeted paraphrases and a relearning attack; resumable cell by cell."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from circuitforge.cli._common import app, check_device_dtype, console, out


def report_html(doc: dict[str, Any]) -> str:
    """The HTML report of a results document (verdict grid with CIs, forget accuracy fp vs quantized)."""
    import html

    import plotly.graph_objects as go

    from circuitforge.eval.bench_summary import PROPS, markdown
    from circuitforge.viz.report import html_report

    table = doc["table"]
    methods = list(table)
    code = {"fail": 0, "undecided": 0.5, "pass": 1}
    z = [[code[table[m]["properties"][p]["call"]] for p in PROPS] for m in methods]

    def cell(p: dict[str, Any]) -> str:
        v, lo, hi = p.get("value"), p.get("lo"), p.get("hi")
        if v is None:
            return str(p["call"])
        return f"{p['call']}<br>{v:.3f}" + ("" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]")

    text = [[cell(table[m]["properties"][p]) for p in PROPS] for m in methods]
    grid = go.Figure(go.Heatmap(z=z, x=list(PROPS), y=methods, text=text, texttemplate="%{text}", zmin=0, zmax=1,
                                colorscale=[[0, "#f4a6a6"], [0.5, "#f3e19b"], [1, "#9fd89f"]], showscale=False))
    grid.update_layout(title="Four properties per method, judged on 95% CI bounds (green pass, yellow undecided, "
                             "red fail)", height=140 + 60 * len(methods), template="plotly_white")
    scheme = doc["config"]["scheme"]

    def bar(key: str, name: str) -> Any:
        cols = [table[m]["columns"][key] for m in methods]
        v = [c["value"] for c in cols]
        ok = [c["value"] is not None and c["lo"] is not None and c["hi"] is not None for c in cols]
        err = [c["hi"] - c["value"] if k else 0 for c, k in zip(cols, ok, strict=True)]
        err_lo = [c["value"] - c["lo"] if k else 0 for c, k in zip(cols, ok, strict=True)]
        return go.Bar(x=methods, y=v, name=name, error_y={"type": "data", "array": err, "arrayminus": err_lo})

    surv = go.Figure([bar("forget_acc", "forget fp"), bar("forget_q", f"forget {scheme}"),
                      bar("paraphrase_acc", "targeted paraphrase")])
    surv.update_layout(barmode="group", title=f"Forget accuracy in fp and {scheme}, and on paraphrases (95% CI)",
                       template="plotly_white", height=400)
    return html_report(f"Unlearning benchmark: {doc['model']}", [
        ("Verdicts", grid), ("NF4 survival", surv), ("Tables", f"<pre>{html.escape(markdown(doc))}</pre>")])


@app.command("bench")
def bench_cmd(
    config: Annotated[Path, typer.Option("--config", help="benchmark config (TOML)")] = Path("benchmarks/unlearning.toml"),
    out_dir: Annotated[Path, typer.Option("--out", help="results folder (cells/ is reused on a rerun)")] = Path("docs/results/unlearning"),
    methods: Annotated[str | None, typer.Option(help="comma-separated subset of the config's methods")] = None,
    splits: Annotated[int | None, typer.Option(help="run only the first N resampled splits")] = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated seeds for the stochastic methods")] = None,
    max_cells: Annotated[int | None, typer.Option(help="stop after computing this many new cells (per worker)")] = None,
    workers: Annotated[int, typer.Option(help="processes computing cells in parallel (splits dealt round-robin; "
                                         "each uses cores ÷ workers torch threads)")] = 1,
    device: Annotated[str | None, typer.Option("--device", help="where the model runs: cpu, cuda, cuda:1, mps "
                                               "(default: the config's, else cpu)")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16 or float16 (default: the "
                                              "config's, else float32)")] = None,
) -> None:
    """Run or resume the unlearning benchmark; writes results.md, results.json and report.html."""
    from circuitforge._provenance import write_text_atomic
    from circuitforge.eval.bench import BenchConfig, run_bench, with_subset

    if workers < 1:
        from circuitforge.errors import CircuitForgeError

        raise CircuitForgeError(f"--workers must be at least 1, not {workers}")
    cfg = with_subset(BenchConfig.from_toml(config), methods, splits, seeds)
    if device is not None or dtype is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, device=device or cfg.device, dtype=dtype or cfg.dtype)
    check_device_dtype(cfg.device, cfg.dtype)
    with console.status("benchmark") as st:
        def say(msg: str) -> None:
            st.update(msg)
            console.print(msg)

        res = run_bench(cfg, out_dir, command="circuitforge " + " ".join(sys.argv[1:]), progress=say,
                        max_cells=max_cells, workers=workers)
    write_text_atomic(out_dir / "report.html", report_html(res))
    out.print((out_dir / "results.md").read_text())
    console.print(f"wrote {out_dir}/results.md, results.json, report.html ({res['seconds']:.0f} s)")
