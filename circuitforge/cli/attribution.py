"""``circuitforge attribute`` (attribution graph → graph.json) and ``circuitforge circuit`` (graph.json →
circuit.json, optional HTML figure)."""

from typing import Annotated

import typer

from circuitforge.cli._common import Device, Dtype, app, console, load_model, out


@app.command("attribute")
def attribute_cmd(
    model: Annotated[str, typer.Option("--model", help="model spec")],
    task: Annotated[str, typer.Option("--task", help="task (file, builtin:NAME, tiny-facts:NAME)")],
    out_path: Annotated[str, typer.Option("--out", help="graph JSON to write")],
    method: Annotated[str, typer.Option(help="eap, eap-ig or exact")] = "eap",
    level: Annotated[str, typer.Option(help="node or edge")] = "node",
    corruption: Annotated[str, typer.Option(help="counterfactual, mean or zero")] = "counterfactual",
    metric: Annotated[str, typer.Option(help="logit_diff, logprob or kl")] = "logit_diff",
    ig_steps: Annotated[int, typer.Option(help="EAP-IG gradient points")] = 5,
    batch_size: Annotated[int, typer.Option(help="rows per forward pass")] = 32,
    memory_budget: Annotated[str | None, typer.Option(
        "--memory-budget", help="cap on the attribution's peak tensor memory, e.g. 512MB or 2GB (eap/eap-ig; "
        "rows per pass planned from two measured probe passes, --batch-size ignored)")] = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
) -> None:
    """Score every node (or edge) of the model's component graph on the task; positive = pushes the
    metric toward the clean answer."""
    from circuitforge.attribution import attribute
    from circuitforge.attribution.memory import parse_bytes
    from circuitforge.data import load_task

    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    with console.status(f"loading {model} and {task}"):
        h, t = load_model(model, device, dtype), load_task(task)
    with console.status(f"{method} {level} attribution on {len(t)} rows"):
        g = attribute(h, t, metric=metric, method=method, level=level, corruption=corruption,
                      ig_steps=ig_steps, batch_size=batch_size, progress=method == "exact", memory_budget=budget)
    g.to_json(out_path)
    if "memory" in g.settings:
        from circuitforge.attribution.memory import fmt_bytes

        mem = g.settings["memory"]
        out.print(f"memory: budget {fmt_bytes(mem['budget'])}, {mem['rows']} rows per pass, measured peak "
                  f"{fmt_bytes(mem['peak'])}" + ("" if mem["within_budget"] else " — OVER the budget (plan missed)"))
    top = sorted(zip(g.writers, g.node_scores.tolist(), strict=True), key=lambda x: -abs(x[1]) if x[1] == x[1] else 0)[:5]
    out.print(f"{method} {level}: clean {g.clean_metric:.3f}, corrupt {g.corrupt_metric:.3f}, "
              f"{g.settings['seconds']:.2f} s; top nodes " + ", ".join(f"{n} {s:+.3f}" for n, s in top))
    console.print(f"wrote {out_path}")


@app.command("circuit")
def circuit_cmd(
    graph: Annotated[str, typer.Option("--graph", help="graph JSON from `circuitforge attribute`")],
    out_path: Annotated[str, typer.Option("--out", help="circuit JSON to write")],
    faithfulness: Annotated[float | None, typer.Option("--faithfulness", help="minimal circuit reaching this")] = None,
    top_n: Annotated[int | None, typer.Option("--top-n", help="the N highest-|score| edges (nodes)")] = None,
    html: Annotated[str | None, typer.Option("--html", help="also write a self-contained HTML figure")] = None,
    model: Annotated[str | None, typer.Option("--model", help="model spec (default: the one in the graph)")] = None,
    task: Annotated[str | None, typer.Option("--task", help="task (default: the one in the graph)")] = None,
    stability: Annotated[bool, typer.Option(help="also measure stability across task halves")] = False,
    device: Device = "cpu",
    dtype: Dtype = "float32",
) -> None:
    """Choose a circuit from a graph: ``--top-n N`` or ``--faithfulness F`` (the smallest circuit whose
    real-ablation faithfulness reaches F; reloads the model and task recorded in the graph)."""
    from circuitforge.attribution import Graph
    from circuitforge.circuits import minimal_circuit, select_top_n
    from circuitforge.errors import CircuitForgeError

    if (faithfulness is None) == (top_n is None):
        raise CircuitForgeError("give exactly one of --faithfulness and --top-n")
    g = Graph.from_json(graph)
    if top_n is not None:
        c = select_top_n(g, top_n)
    else:
        assert faithfulness is not None
        from circuitforge.data import load_task

        spec = model or g.model.get("spec")
        source = task or g.task.get("source")
        if not spec or not source:
            raise CircuitForgeError(f"{graph}: no model spec / task source recorded; pass --model and --task")
        with console.status(f"loading {spec} and {source}"):
            h, t = load_model(spec, device, dtype), load_task(source)
        if h.sha256 != g.model.get("sha256"):
            console.print(f"warning: {spec} has different weights than the model the graph was computed on")
        if t.sha256 != g.task.get("sha256"):
            console.print(f"warning: {source} has different rows than the task the graph was computed on")
        c = minimal_circuit(h, t, faithfulness=faithfulness, graph=g, stability=stability,
                            progress=lambda s: console.print(f"  {s}"))
        out.print(c.message)
        if c.baselines:
            out.print(f"same-size random {c.baselines['random']:.3f}, weight-magnitude {c.baselines['weight_magnitude']:.3f}")
    c.to_json(out_path)
    out.print(f"{c.n_edges} edges, {len(c.nodes)} components" +
              ("" if c.faithfulness is None else f", faithfulness {c.faithfulness:.3f}"))
    console.print(f"wrote {out_path}")
    if html:
        from circuitforge.viz.circuit import save_circuit_html

        save_circuit_html(c, html)
        console.print(f"wrote {html}")
    if faithfulness is not None and not c.reached:
        raise typer.Exit(1)
