"""``circuitforge verify``: the four-property scorecard of an unlearned checkpoint and the relearning gate (exit 0 pass / 1 fail / 2 bad input)."""

import math
import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from circuitforge.cli._common import Device, Dtype, app, console, load_model, out, write_json

if TYPE_CHECKING:
    from circuitforge.data import Task

DEFAULT_MAX_RELEARN = 0.5
"""``circuitforge.eval.relearn.DEFAULT_MAX_RELEARN`` (the gate's rule lives there), restated so that the CLI's
help is built without importing torch; a unit test keeps the two equal."""


@app.command("verify")
def verify_cmd(
    base: Annotated[str, typer.Option("--base", help="base model spec")],
    unlearned: Annotated[str, typer.Option("--unlearned", help="unlearned model spec (HF folder: safetensors only)")],
    forget: Annotated[str, typer.Option("--forget", help="forget task")] = "builtin:forget",
    retain: Annotated[str, typer.Option("--retain", help="retain task")] = "builtin:retain",
    scheme: Annotated[str, typer.Option("--scheme", help="quantization scheme for the PTQ gap (nf4, fp4, int8)")] = "nf4",
    json_path: Annotated[str | None, typer.Option("--json", help="write the verify JSON here ('-' = stdout)")] = None,
    html_path: Annotated[str | None, typer.Option("--html", help="write a self-contained HTML report here")] = None,
    min_forget_drop: Annotated[float, typer.Option(help="forgetting passes when the forget-accuracy drop is ≥ this")] = 0.30,
    max_retain_drop: Annotated[float, typer.Option(help="retain passes when the retain-accuracy drop is ≤ this")] = 0.05,
    max_ptq_gap: Annotated[float, typer.Option(help="PTQ gap passes when quantized − fp forget accuracy is ≤ this")] = 0.0,
    cad_z: Annotated[float, typer.Option(help="z-score above which the paper's CAD value counts as significant (reported; the verdict comes from hybrid recovery)")] = 3.0,
    cad_rows: Annotated[int, typer.Option(help="forget rows used for CAD")] = 32,
    method: Annotated[str, typer.Option(help="attribution method for CAD: eap or eap-ig")] = "eap-ig",
    ig_steps: Annotated[int, typer.Option(help="EAP-IG steps")] = 5,
    circuit: Annotated[str | None, typer.Option(help="reuse a base circuit JSON instead of finding it")] = None,
    base_reference: Annotated[str | None, typer.Option(
        "--base-reference", help="cache file of the base model's own measurements (accuracies in fp and under "
        "--scheme, CAD's base attributions): reused where the base weights, tasks and settings match (sha256), "
        "rewritten after the run")] = None,
    relearn: Annotated[bool | None, typer.Option(
        "--relearn/--no-relearn", help="run the relearning attack (the default): fine-tune on half the forget "
        "facts, measure how much of the other half comes back, and fail when it exceeds --max-relearn; "
        "--no-relearn skips it (the verdict alone does not say whether the knowledge comes back)")] = None,
    relearn_unknown: Annotated[str | None, typer.Option(help="rows the base model never knew: the relearning "
                                                        "attack's floor")] = None,
    relearn_lr: Annotated[float, typer.Option(help="the attacker's Adam step size")] = 1e-4,
    max_relearn: Annotated[float | None, typer.Option(help=f"fail (exit 1) when the relearning recovery exceeds "
                                                      f"this (default {DEFAULT_MAX_RELEARN}; 'inf' = report "
                                                      f"the attack without gating on it)")] = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
) -> None:
    """Score an unlearned checkpoint: forgetting, retain, PTQ gap, structural erasure (CAD), relearning.

    Exit 0: every property passes and the relearning attack recovers at most --max-relearn; 1: a property
    fails or more comes back; 2: bad input (one line on stderr: incompatible
    models, non-finite weights, an empty or over-long task, a malformed circuit or one found on other
    weights or rows); 3: an internal error.
    """
    from circuitforge.cad import CADSettings
    from circuitforge.circuits import Circuit, CircuitSearch
    from circuitforge.data import load_task
    from circuitforge.errors import CircuitForgeError
    from circuitforge.eval import BaseReference, Thresholds, assess
    from circuitforge.eval.relearn import gate_fields

    try:
        th = Thresholds(min_forget_drop, max_retain_drop, max_ptq_gap, cad_z)
        settings = CADSettings(method=method, ig_steps=ig_steps, z_threshold=cad_z)  # type: ignore[arg-type]
        search = CircuitSearch(method=method, ig_steps=ig_steps, rows=None)  # type: ignore[arg-type]
    except ValueError as e:
        raise CircuitForgeError(str(e)) from e
    if cad_rows < 4:
        raise CircuitForgeError("--cad-rows must be at least 4 (CAD's null splits the rows in halves)")
    f, r = load_task(forget), load_task(retain)
    from circuitforge.eval.relearn import RelearnSettings

    try:
        rl_settings = RelearnSettings(lr=relearn_lr) if relearn is not False else None
    except ValueError as e:
        raise CircuitForgeError(f"--relearn-lr: {e}") from e
    unknown = load_task(relearn_unknown) if relearn_unknown else None
    if relearn is False and (max_relearn is not None or relearn_unknown):
        raise CircuitForgeError(f"{'--max-relearn' if max_relearn is not None else '--relearn-unknown'} needs the "
                                "relearning attack (drop --no-relearn)")
    gate = DEFAULT_MAX_RELEARN if max_relearn is None else max_relearn
    if not gate >= 0:
        raise CircuitForgeError(f"--max-relearn must be ≥ 0 (got {gate})")
    skipped = None
    if relearn is None:   # the default: run the attack where the forget rows can be split by fact
        skipped = relearn_skip_reason(f)
        relearn = skipped is None
        if not relearn:
            rl_settings = None
    circ = Circuit.from_json(circuit) if circuit else None
    ref = BaseReference.from_json(base_reference) if base_reference and os.path.exists(base_reference) else None
    with console.status("loading models"):
        mb, mu = load_model(base, device, dtype), load_model(unlearned, device, dtype)
    with console.status("verifying (accuracies, quantization, CAD)") as st:
        a = assess(mb, mu, f, r, circuit=circ, search=search, scheme=scheme, thresholds=th, cad_settings=settings,
                   cad_rows=cad_rows, base_reference=ref, relearn=rl_settings, relearn_unknown=unknown,
                   progress=lambda msg: st.update(f"verifying: {msg}"))
    if base_reference:
        reused = ref is not None and ref.matches(mb)
        a.reference().to_json(base_reference)
        console.print(f"base reference {'read from and ' if reused else ''}written to {base_reference}"
                      + ("" if reused or ref is None else " (the old one was measured on other base weights)"))
    card, c = a.scorecard, a.cad
    d = card.to_dict()
    t = Table(title=f"verify: {unlearned} against {base}")
    for col in ("property", "value", "95% CI", "threshold", "pass"):
        t.add_column(col)
    for name, p in d["properties"].items():
        ci = f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}] {p.get('call', '')}" if p.get("ci") else "–"
        t.add_row(name, f"{p['value']:.3f}", ci, f"{p.get('direction', '')} {p['threshold']:.3f}",
                  "[green]pass" if p["pass"] else "[red]FAIL")
    out.print(t)
    rule = d["cad"].get("rule")
    out.print(f"CAD verdict: {c.verdict}" + (f" ({rule})" if rule else "") + f"; paper's CAD {c.value:.3f} (z {c.z:.1f}); "
              f"four properties: {'PASS' if card.passed else 'FAIL'} ({card.seconds:.0f} s)")
    passed = card.passed
    if a.relearn is not None:
        rl = a.relearn
        gated = math.isfinite(gate)
        if gated:   # recovery undefined = nothing was forgotten: forgetting already fails
            rl.update(gate_fields(rl, gate))
            passed = passed and rl["pass"]
        d["pass"] = passed
        ci = f" [{rl['ci'][0]:.2f}, {rl['ci'][1]:.2f}]" if rl.get("ci") else ""
        rec = "undefined (nothing to recover)" if rl["recovery"] is None else f"{rl['recovery']:.2f}{ci}"
        out.print(f"relearning: recovery {rec} of the held-out targeted facts after {rl['best_budget']} steps on the "
                  f"other half ({rl['n_held']} held rows; floor: {rl['floor']})")
        if gated:
            out.print(f"relearning recovery ≤ {gate:.2f}: {'pass' if rl['pass'] else '[red]FAIL'} "
                      f"(from the CI: {rl['call']}); "
                      f"overall: {'PASS' if passed else 'FAIL'}")
    d["notes"] = verdict_notes(c.verdict, a.relearn, skipped)
    for note in d["notes"]:
        out.print(f"[yellow]note: {note}")
    rl_doc = a.relearn if a.relearn is not None else ({"skipped": skipped} if skipped else None)
    write_json(json_path, {**d, "cad_detail": c.to_dict(), "relearn": rl_doc} if json_path else None)
    if html_path:
        from circuitforge._provenance import write_text_atomic
        from circuitforge.viz.report import verify_report

        write_text_atomic(html_path, verify_report(d, c.to_dict(), rl_doc))
        console.print(f"wrote {html_path}")
    raise typer.Exit(0 if passed else 1)


def relearn_skip_reason(forget: "Task") -> str | None:
    """Why the default relearning attack cannot run on ``forget`` (its rows do not split into two groups of
    facts, :func:`circuitforge.eval.relearn.split_by_fact`), or ``None`` when it can. An explicit
    ``--relearn`` raises instead."""
    from circuitforge.errors import CircuitForgeError
    from circuitforge.eval.relearn import split_by_fact

    try:
        split_by_fact(forget)
    except CircuitForgeError as e:
        return str(e)
    return None


def verdict_notes(verdict: str, relearn: dict | None, skipped: str | None = None) -> list[str]:  # type: ignore[type-arg]
    """What the printed summary and the JSON's ``notes`` say: when the default relearning attack could not
    run, why; and beside an ``erasure`` verdict, that it reads the residual stream, not the weights; that on
    real unlearning runs it has not predicted relearning (docs/cad.md, "Out of sample"), so without the
    attack nothing measured says the knowledge is gone; and, with the attack run, when the attack's CI lies
    above 0."""
    notes = [f"relearning attack not run: {skipped}"] if skipped else []
    if verdict != "erasure":
        return notes
    if relearn is None:
        return notes + ["CAD's `erasure` says the answer is no longer readable from the residual stream; on the "
                        "SmolLM2 benchmark runs called `erasure` relearned as much as the rest (docs/cad.md, 'Out "
                        "of sample'): without the relearning attack nothing here measures whether the knowledge "
                        "comes back"]
    ci = relearn.get("ci")
    if relearn.get("recovery") is not None and ci and ci[0] > 0:
        return notes + ["CAD's `erasure` says the answer is no longer readable from the residual stream; the "
                        "relearning attack brings part of it back, so the knowledge is not gone from the weights"]
    return notes
