"""``circuitforge quant-check`` (survival under quantization) and ``circuitforge quant-diff`` (bin math)."""

from typing import Annotated

import typer
from rich.table import Table

from circuitforge.cli._common import Device, Dtype, app, console, load_model, out, write_json

JSON_OPT = typer.Option("--json", help="write JSON here ('-' = stdout)")


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


@app.command("quant-check")
def quant_check(
    base: Annotated[str, typer.Option("--base", help="base model spec")],
    model: Annotated[str, typer.Option("--model", help="edited model spec")],
    forget: Annotated[str, typer.Option("--forget", help="forget task (file or builtin:NAME)")],
    retain: Annotated[str, typer.Option("--retain", help="retain task (file or builtin:NAME)")],
    scheme: Annotated[list[str] | None, typer.Option("--scheme", help="nf4, fp4, int8 (+ -b128, -dq); repeatable")] = None,
    route: Annotated[str, typer.Option(help="fast (bitsandbytes round trip on a copy) or deploy (BitsAndBytesConfig load)")] = "fast",
    json_path: Annotated[str | None, JSON_OPT] = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
) -> None:
    """Forget/retain accuracy of base and edited model in full precision and under each scheme; PTQ gap."""
    from circuitforge.data import load_task
    from circuitforge.errors import CircuitForgeError
    from circuitforge.quant import Scheme, survival

    if route not in ("fast", "deploy"):
        raise CircuitForgeError(f"--route must be fast or deploy, not {route!r}")
    schemes = [Scheme.parse(s) for s in (scheme or ["nf4"])]
    ft, rt = load_task(forget), load_task(retain)
    b, e = load_model(base, device, dtype), load_model(model, device, dtype)
    rep = survival(b, e, ft, rt, schemes=schemes, route=route)  # type: ignore[arg-type]
    t = Table(title=f"{model} vs {base} ({route} route)")
    for c in ("model", "precision", "forget acc", "retain acc", "PTQ gap", "recovery"):
        t.add_column(c)
    for who in ("base", "edited"):
        fp = rep["fp"][who]
        t.add_row(who, "fp32", _fmt(fp["forget_acc"]), _fmt(fp["retain_acc"]), "", "")
    for label, row in rep["schemes"].items():
        t.add_row("base", label, _fmt(row["base"]["forget_acc"]), _fmt(row["base"]["retain_acc"]), "", "")
        t.add_row("edited", label, _fmt(row["edited"]["forget_acc"]), _fmt(row["edited"]["retain_acc"]),
                  f"{row['ptq_gap']:+.3f}", _fmt(row["recovery_ratio"]))
    out.print(t)
    for label, row in rep["schemes"].items():
        if row["recovery_ratio_note"]:
            console.print(f"{label}: recovery ratio {row['recovery_ratio_note']}")
    write_json(json_path, rep)


@app.command("quant-diff")
def quant_diff(
    base: Annotated[str, typer.Option("--base", help="base model spec")],
    model: Annotated[str, typer.Option("--model", help="edited model spec")],
    scheme: Annotated[str, typer.Option("--scheme", help="nf4 or fp4 (+ -b128)")] = "nf4",
    json_path: Annotated[str | None, JSON_OPT] = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
) -> None:
    """Bin width ÷ |update|, code-flip rate and changed share of an edit, over the quantized linear weights."""
    from circuitforge.quant import diff_report

    b, e = load_model(base, device, dtype), load_model(model, device, dtype)
    rep = diff_report(b, e, scheme)
    q = rep["binwidth_to_update_ratio"]
    out.print(
        f"{model} vs {base} [{rep['scheme']['label']}]: {rep['n_changed']}/{rep['n_params']} weights changed "
        f"({rep['changed_share']:.4f}) in {rep['n_tensors']} quantized tensors"
    )
    out.print(f"median_binwidth_to_update_ratio {_fmt(q['median'])} (p5 {_fmt(q['p5'])}, p95 {_fmt(q['p95'])})")
    out.print(
        f"code_flip_rate {rep['code_flip_rate']:.6f} ({rep['n_code_flips']} flips; "
        f"{rep['flips_in_absmax_changed_blocks']} in {rep['n_absmax_changed_blocks']} blocks whose absmax changed; "
        f"fixed-absmax flip rate {rep['code_flip_rate_fixed_absmax']:.6f})"
    )
    write_json(json_path, rep)
