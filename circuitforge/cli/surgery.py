"""``circuitforge unlearn``: run MANSU or a baseline and save the edited model as an HF checkpoint.

Exit 0 only when the run reached its forget target with at least one weight changed. A run that changed
nothing, or stopped before its forget target (``retain_budget_spent``, ``no_candidates``, ``max_steps``),
still saves the checkpoint and manifest (for inspection) but prints one line — ``unlearn: FAILED …`` with the
stop reason, the forget/retain accuracies reached and the number of weights changed — and exits 1, so a
script cannot mistake it for success.
"""

from typing import Annotated, Any

import typer
from rich.table import Table

from circuitforge.cli._common import Device, Dtype, app, console, load_model, out, write_json


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
    device: Device = "cpu",
    dtype: Dtype = "float32",
) -> None:
    """Unlearn FORGET from MODEL while keeping RETAIN; save the edited checkpoint with a manifest."""
    from pathlib import Path

    from circuitforge.data import load_task
    from circuitforge.errors import CircuitForgeError
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
        base = load_model(model, device, dtype)
    if "circuit" in kw:  # a circuit found on other weights or other rows would edit the wrong components
        n = int(kw["circuit"].task.get("n") or len(ft))
        try:
            kw["circuit"].check_found_on(base, ft.head(n), f"the first {n} rows of {forget}")
        except CircuitForgeError as e:
            raise CircuitForgeError(f"{circuit}: {e}") from e
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
    line = outcome_line(res)
    if line is not None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def outcome_line(res: Any) -> str | None:
    """None when ``res`` reached its forget target with weights changed; else the one-line failure."""
    n = int(res.mask_stats["n_changed"])
    reached = res.stop_reason == "forget_target_reached"
    if reached and n > 0:
        return None
    fin = res.diagnostics["final"]
    target = res.settings.get("target_forget_acc")
    why = "changed no weights" if n == 0 else "stopped before its forget target"
    t = f" (target <= {target:.3f})" if isinstance(target, int | float) else ""
    return (f"unlearn: FAILED: {res.method} {why}: stop reason {res.stop_reason}, forget acc {fin['forget_acc']:.3f}"
            f"{t}, retain acc {fin['retain_acc']:.3f}, {n} weights changed")
