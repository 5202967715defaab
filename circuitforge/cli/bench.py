"""``circuitforge bench``: every unlearning method × seed, with quantization, CAD and relearning attacks."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from circuitforge.cli._common import app, console, out


@app.command("bench")
def bench_cmd(
    config: Annotated[Path, typer.Option("--config", help="benchmark config (TOML)")] = Path("benchmarks/unlearning.toml"),
    out_dir: Annotated[Path, typer.Option("--out", help="results folder (cells/ is reused on a rerun)")] = Path("docs/results/unlearning"),
    methods: Annotated[str | None, typer.Option(help="comma-separated subset of the config's methods")] = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated subset of seeds")] = None,
) -> None:
    """Run or resume the unlearning benchmark; writes results.md, results.json and report.html."""
    import dataclasses

    from circuitforge.errors import CircuitForgeError
    from circuitforge.eval.bench import BenchConfig, run_bench

    cfg = BenchConfig.from_toml(config)
    if methods:
        wanted = tuple(m.strip() for m in methods.split(","))
        unknown = set(wanted) - set(cfg.methods)
        if unknown:
            raise CircuitForgeError(f"--methods: not in the config: {', '.join(sorted(unknown))}")
        cfg = dataclasses.replace(cfg, methods=wanted)
    if seeds:
        try:
            cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in seeds.split(",")))
        except ValueError as e:
            raise CircuitForgeError(f"--seeds: {e}") from e
    with console.status("benchmark") as st:
        def say(msg: str) -> None:
            st.update(msg)
            console.print(msg)

        res = run_bench(cfg, out_dir, command="circuitforge " + " ".join(sys.argv[1:]), progress=say)
    out.print((out_dir / "results.md").read_text())
    console.print(f"wrote {out_dir}/results.md, results.json, report.html ({res['seconds']:.0f} s)")
