"""The demo pipeline (``circuitforge demo``): the whole toolkit on the embedded model, as one function.

find the base forget circuit (:class:`~circuitforge.circuits.CircuitSearch`) → unlearn with MANSU and a
gradient baseline → :func:`~circuitforge.eval.assess.assess` each edit (fp and NF4 accuracies with paired
CIs, CAD; base evaluations shared between the methods) → NF4 bin-width diagnostics → ``demo.json``,
``circuit.json`` and one ``cad-<method>.json`` per method. The CLI renders ``report.html`` from these with
:mod:`circuitforge.viz` and prints the table; this module prints nothing and reports progress through a
callback. ``quick=True`` runs the same steps on the tiny trained model with small settings (the tests).
"""

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from circuitforge._provenance import run_info, write_json_atomic
from circuitforge.circuits import Circuit, CircuitSearch
from circuitforge.errors import CircuitForgeError

FORMAT = "circuitforge.demo/1"
Progress = Callable[[str, str], None]
"""``progress(step, message)``: ``step`` is a stable key (``load``, ``circuit``, ``unlearn_ga``…)."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. ``quick`` selects the tiny trained model and small settings."""

    quick: bool = False
    baseline: str = "ga"
    seed: int = 0
    n_forget: int = 64
    n_retain: int = 64
    n_cad: int = 24
    ig_steps: int = 5
    baseline_settings: dict[str, Any] = field(default_factory=dict)
    """the gradient baseline's settings (empty: the library defaults; lr 2e-5 reached the target on SmolLM2
    at retain accuracy 0.31, lr 1e-5 keeps it near 0.7)"""
    n_benign: int = 2
    hybrid_points: int = 8
    """CAD's matched benign edits and hybrid layers (the library defaults 4 and 16 doubled the demo's time)"""

    mansu_settings: dict[str, Any] = field(default_factory=dict)
    """MANSU's settings (empty: the library defaults)"""
    device: str = "cpu"
    dtype: str = "float32"
    """where and in which dtype the model runs (``circuitforge.models.load``)"""

    @classmethod
    def make(cls, quick: bool, baseline: str = "ga", seed: int = 0, device: str = "cpu",
             dtype: str = "float32") -> "DemoConfig":
        if quick:  # EAP neuron scores on 16 rows; the 4-layer model stores facts densely: a 10% edit budget
            return cls(True, baseline, seed, 48, 48, 16, 3, {}, 2, 3,
                       {"circuit_method": "eap", "circuit_rows": 16, "circuit_budget": 0.1, "max_output_change": 0.1},
                       device, dtype)
        return cls(False, baseline, seed, device=device, dtype=dtype)

    @property
    def model(self) -> str:
        return "tiny-facts" if self.quick else "smollm2-135m"

    @property
    def task_prefix(self) -> str:
        return "tiny-facts:" if self.quick else "builtin:"

    @property
    def search(self) -> CircuitSearch:
        return CircuitSearch(method="eap-ig", ig_steps=self.ig_steps, faithfulness=0.8, rows=self.n_cad,
                             baselines=True)


@dataclass
class DemoResult:
    summary: dict[str, Any]
    """the ``demo.json`` document"""
    circuit: Circuit
    cad: dict[str, dict[str, Any]]
    """method → ``CADResult.to_dict()``"""


def _chance(task: Any) -> float | None:
    """Accuracy of uniform guessing over each row's options (cloze with distractors, or multiple choice)."""
    opts = [len(getattr(it, "choices", ())) or (1 + len(getattr(it, "distractors", ()))) for it in task.items]
    return None if not opts or min(opts) < 2 else sum(1 / k for k in opts) / len(opts)


def demo_relearn(rl: dict[str, Any] | None) -> dict[str, Any] | None:
    """The demo's record of the relearning attack (``Assessment.relearn``): recovery, CI, budget, held rows and
    the gate verify applies by default (recovery ≤ ``DEFAULT_MAX_RELEARN``: ``pass`` on the point value,
    ``call`` from the CI)."""
    from circuitforge.eval.relearn import DEFAULT_MAX_RELEARN, gate_fields

    if rl is None:
        return None
    return {"recovery": rl["recovery"], "ci": rl.get("ci"), "best_budget": rl.get("best_budget"),
            "n_held": rl.get("n_held"), **gate_fields(rl, DEFAULT_MAX_RELEARN)}


def _peak_rss_gib() -> float:
    """This process's peak resident set size so far (GiB; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_demo(out_dir: Path, cfg: DemoConfig, overwrite: bool = False, progress: Progress | None = None) -> DemoResult:
    """Run the demo into ``out_dir`` (refused when it exists and is not empty, unless ``overwrite``)."""
    from circuitforge.cad import CADSettings
    from circuitforge.data import load_task
    from circuitforge.eval.assess import assess
    from circuitforge.eval.relearn import RelearnSettings
    from circuitforge.models import load
    from circuitforge.quant import diff_report
    from circuitforge.surgery import unlearn

    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise CircuitForgeError(f"{out_dir}: exists and is not empty (pass --overwrite)")
    say = progress or (lambda step, msg: None)
    t_start = time.time()
    timings: dict[str, float] = {}
    peaks: dict[str, float] = {}   # the process's peak RSS (GiB) at the end of each step: where the peak is reached

    def timed(step: str, msg: str, fn: Callable[[], Any]) -> Any:
        say(step, msg)
        t0 = time.time()
        v = fn()
        timings[step] = round(time.time() - t0, 1)
        peaks[step] = round(_peak_rss_gib(), 2)
        say(step, f"done ({timings[step]:.0f} s)")
        return v

    def _load() -> tuple[Any, ...]:
        base = load(cfg.model, device=cfg.device, dtype=cfg.dtype)
        p = cfg.task_prefix
        return (base, load_task(p + "forget").head(cfg.n_forget), load_task(p + "retain").head(cfg.n_retain),
                load_task(p + "forget_paraphrase").head(cfg.n_forget))

    base, forget, retain, para = timed("load", f"loading {cfg.model} and the built-in tasks", _load)
    search = cfg.search
    circuit: Circuit = timed("circuit", f"finding the forget circuit (EAP-IG({cfg.ig_steps}), faithfulness ≥ 0.8, "
                             f"{cfg.n_cad} rows)", lambda: search.find(base, forget))
    summary: dict[str, Any] = {
        "format": FORMAT, "model": cfg.model, "quick": cfg.quick, "seed": cfg.seed, **run_info(),
        "dtype": str(next(base.hf.parameters()).dtype).replace("torch.", ""), "device": str(base.device),
        "base": {"identity": base.identity()},
        "tasks": {name: {**t.identity(), "source": t.source, "n": len(t), "chance": _chance(t),
                         "examples": [getattr(it, "prompt", getattr(it, "question", "")) for it in t.items[:2]]}
                  for name, t in (("forget", forget), ("retain", retain), ("paraphrase", para))},
        "circuit": {"search": search.to_dict(), "edges": circuit.n_edges, "nodes": sorted(circuit.nodes),
                    "faithfulness": circuit.faithfulness, "reached": circuit.reached, "message": circuit.message,
                    "baselines": circuit.baselines},
        "methods": {}, "timings": timings, "peak_rss_gib_after": peaks,
    }
    cads: dict[str, dict[str, Any]] = {}
    ref: Any = None  # the first assessment: its base-model evaluations (and relearning curve) are reused
    # the relearning attack verify runs by default: how much of the held-out half of the forget facts comes back
    # after fine-tuning on the other half (the CAD verdict does not predict it: docs/cad.md, "Out of sample")
    rl_settings = RelearnSettings(seed=cfg.seed)
    for method in ("mansu", cfg.baseline):
        # MANSU finds and edits its own neuron-level circuit (surgical mask); the edge circuit above is the
        # one CAD compares M₀ and M₁ on
        kw: dict[str, Any] = dict(cfg.mansu_settings) if method == "mansu" else dict(cfg.baseline_settings)
        res = timed(f"unlearn_{method}", f"unlearning with {method}",
                    partial(unlearn, base, forget, retain, method=method, seed=cfg.seed, **kw))
        edited = res.handle
        a = timed(f"assess_{method}", f"{method}: accuracies in fp and NF4, CAD",
                  partial(assess, base, edited, forget, retain, circuit=circuit, cad_rows=cfg.n_cad,
                          cad_settings=CADSettings(ig_steps=cfg.ig_steps, n_benign=cfg.n_benign,
                                                   hybrid_points=cfg.hybrid_points, seed=cfg.seed),
                          extra_tasks={"paraphrase": para}, seed=cfg.seed, base_reference=ref, relearn=rl_settings))
        ref = ref or a
        diag = timed(f"quant_{method}", f"{method}: NF4 bin-width diagnostics", partial(diff_report, base, edited, "nf4"))
        acc = a.scorecard.accuracies
        summary["methods"][method] = {
            "accuracy": {"forget": acc["unlearned_forget"], "retain": acc["unlearned_retain"],
                         "paraphrase": acc["unlearned_paraphrase"], "forget_nf4": acc["unlearned_forget_nf4"],
                         "retain_nf4": acc["unlearned_retain_nf4"]},
            "scorecard": a.scorecard.to_dict(), "cad": a.cad.summary(),
            "median_binwidth_to_update_ratio": diag.get("median_binwidth_to_update_ratio"),
            "code_flip_rate": diag.get("code_flip_rate"), "changed_share": diag.get("changed_share"),
            "stop_reason": getattr(res, "stop_reason", None), "hyperparameters": getattr(res, "settings", {}),
            "relearn": demo_relearn(a.relearn),
        }
        cads[method] = a.cad.to_dict()
        del res, edited, a
        gc.collect()  # free the edited model before the next method (peak memory)
    acc = ref.scorecard.accuracies  # base-model accuracies (shared by every method's assessment)
    summary["base"]["accuracy"] = {"forget": acc["base_forget"], "retain": acc["base_retain"],
                                   "paraphrase": acc["base_paraphrase"], "forget_nf4": acc["base_forget_nf4"],
                                   "retain_nf4": acc["base_retain_nf4"]}
    summary["seconds"] = round(time.time() - t_start, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "demo.json", summary)
    circuit.to_json(out_dir / "circuit.json")
    for m, d in cads.items():
        write_json_atomic(out_dir / f"cad-{m}.json", d)
    return DemoResult(summary, circuit, cads)
