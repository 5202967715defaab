"""``circuitforge unlearn``: run MANSU or a baseline and save the edited model as an HF checkpoint."""

from typing import Annotated

import typer
from rich.table import Table

from circuitforge.cli._common import app, console, out, write_json


@app.command("unlearn")
def unlearn_cmd(
    model: Annotated[str, typer.Option("--model", help="base model spec")],
    forget: Annotated[str, typer.Option("--forget", help="forget task (file, builtin:NAME, tiny-facts:NAME)")],
    retain: Annotated[str, typer.Option("--retain", help="retain task")],
    out_dir: Annotated[str, typer.Option("--out", help="folder for the edited HF checkpoint (+ circuitforge.json)")],
    method: Annotated[str, typer.Option("--method", help="mansu, ga, graddiff, npo, rmu or sure")] = "mansu",
    seed: Annotated[int, typer.Option("--seed", help="seed for every random choice")] = 0,
    set_: Annotated[list[str] | None, typer.Option("--set", help="method setting NAME=VALUE (repeatable)")] = None,
    circuit: Annotated[str | None, typer.Option("--circuit", help="mansu: circuit JSON whose nodes to edit")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing --out folder")] = False,
    json_path: Annotated[str | None, typer.Option("--json", help="also write the manifest here ('-' = stdout)")] = None,
) -> None:
    """Unlearn FORGET from MODEL while keeping RETAIN; save the edited checkpoint with a manifest."""
    from pathlib import Path

    from circuitforge.data import load_task
    from circuitforge.errors import CircuitForgeError
    from circuitforge.models import load
    from circuitforge.surgery import METHODS, parse_settings, settings_class, unlearn

    if method not in METHODS:
        raise CircuitForgeError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if Path(out_dir).exists() and not overwrite:
        raise CircuitForgeError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    kw = parse_settings(settings_class(method), set_ or [])
    if circuit is not None:
        if method != "mansu":
            raise CircuitForgeError("--circuit applies to --method mansu only")
        from circuitforge.circuits import Circuit

        kw["circuit"] = Circuit.from_json(circuit)
    ft, rt = load_task(forget), load_task(retain)
    with console.status(f"loading {model}"):
        base = load(model)
    with console.status(f"unlearning with {method}"):
        res = unlearn(base, ft, rt, method=method, seed=seed, **kw)
    folder = res.save(out_dir, overwrite=overwrite)
    m = res.manifest()
    t = Table(title=f"{method} on {model}")
    for c in ("stop reason", "forget acc", "retain acc", "edited params", "share", "time"):
        t.add_column(c)
    fin = res.diagnostics["final"]
    t.add_row(res.stop_reason, f"{fin['forget_acc']:.3f}", f"{fin['retain_acc']:.3f}",
              str(res.mask_stats["n_changed"]), f"{res.mask_stats['changed_share']:.5f}", f"{res.wall_time_s:.1f} s")
    out.print(t)
    if "code_flips" in res.diagnostics:
        cf = res.diagnostics["code_flips"]
        out.print(f"NF4 code-flip rate of the edited weights: {cf['code_flip_rate']:.4f} ({cf['n_code_flips']}/{cf['n_changed']})")
    console.print(f"wrote {folder}")
    write_json(json_path, m)
