"""The unlearning benchmark runner (``circuitforge bench``): every method × resampled split (× seed for
stochastic methods) on one model, each cell scored through :func:`circuitforge.eval.assess.assess`, plus
same-domain retain, targeted paraphrases and a relearning attack; resumable cell by cell.

Why it is built this way (issue 13): with one fixed 64-row forget set, one item is 0.016 and a
deterministic method gives the same number on every seed, so claims could not be told apart from noise.
Here the variance comes from resampling *which facts are forgotten* (:mod:`circuitforge.data.splits`):

1. **Splits.** ``n_splits`` splits of the chemistry pool by fact (forget / same-domain retain / targeted
   paraphrases / relearning halves / never-known floor), plus a calibration split of other facts.
2. **Baselines at matched forgetting.** Each baseline's settings come from a small grid (``[sweep.METHOD]``)
   run on the calibration split only: the grid point that reaches ``sweep_target`` forget accuracy with
   the least retain damage (general + same-domain); if none reaches it, the one that forgets most.
   Every grid point is recorded (``sweep.json``).
3. **Cells.** ``cells/<method>-<split>-seed<s>.json``: the :func:`assess` scorecard (forget, general
   retain, NF4 gap, CAD on the split's base circuit, found once per split with ``CircuitSearch`` and cached
   in ``circuits/``; MANSU edits its own neuron circuit within its ``circuit_budget``, found on the split's
   forget rows), per-row outcomes of every task, the relearning attack (best of ``relearn.budgets``,
   floored by never-known rows, base curve shared per split) and the NF4 diagnostics. Every method is
   given the general retain rows; with ``n_retain_same_train`` > 0 also that many same-domain rows of facts
   in no other part of the split (``Split.retain_train``; :func:`method_retain`), so that the same-domain
   retain rows stay held out.
4. **Summary** (:mod:`circuitforge.eval.bench_summary`): every property pooled over splits with two-level
   paired bootstrap 95% CIs, pass / fail / undecided from the CI bounds, claims (a)–(e) with CIs and tests.

A cell is reused when its file exists with the same config ``version``; change ``version`` when a setting
changes. Base-model evaluations per split are cached in ``splits/<split>.json``. A cell whose CAD evidence
has an older format than the library's (:func:`circuitforge.eval.bench_summary.cad_current`) is refreshed on the next run: the method is
rerun and, when the rebuilt weights equal the cell's, only CAD is measured again (:func:`refresh_cad_cell`;
the cell records ``cad_refreshed``); otherwise the whole cell is rerun. Until then the summary counts only
current-format cells in its CAD statistics and the table marks the others.
"""

import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from circuitforge._provenance import versions, write_json_atomic, write_text_atomic
from circuitforge.errors import CircuitForgeError
from circuitforge.eval.bench_summary import cad_current

Say = Callable[[str], None]
FORMAT = "circuitforge.bench/2"


@dataclass(frozen=True)
class BenchConfig:
    """The benchmark settings (``benchmarks/unlearning.toml``); see the module docstring."""

    version: int
    model: str
    pool: str = "builtin"
    """``builtin`` (the chemistry pool, filtered on SmolLM2), ``builtin:MODEL`` (that pool filtered on another
    model: ``builtin:gemma3-270m``, ``builtin:qwen2.5-0.5b``) or ``tiny-facts`` (the tiny fact world, for tests)"""
    retain: str = "builtin:retain"
    """the general retain set (the retain property of the scorecard)"""
    n_splits: int = 5
    split_seed: int = 0
    n_forget: int = 48
    n_retain: int = 64
    n_retain_same: int = 48
    n_retain_same_train: int = 0
    """same-domain rows every method is given as retain rows besides the general ones (facts in no other part
    of the split, so ``retain_same`` stays held out); 0: general retain rows only (v2)"""
    n_unknown: int = 48
    cad_rows: int = 24
    methods: tuple[str, ...] = ("mansu", "ga", "graddiff", "npo", "rmu", "sure")
    seeds: tuple[int, ...] = (0,)
    deterministic: tuple[str, ...] = ("mansu",)
    scheme: str = "nf4"
    extra_schemes: tuple[str, ...] = ()
    search: dict[str, Any] = field(default_factory=dict)
    cad: dict[str, Any] = field(default_factory=dict)
    relearn: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """fixed settings per method (merged under the sweep's choice)"""
    sweep: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    """per baseline: setting name → values; the grid is their product"""
    sweep_target: float = 0.3
    """forget accuracy the sweep must reach on the calibration split (matched forgetting)"""
    calibration_share: float = 0.15
    device: str = "cpu"
    dtype: str = "float32"
    """where and in which dtype the model runs (``circuitforge.models.load``)"""

    @classmethod
    def from_toml(cls, path: str | Path) -> "BenchConfig":
        try:
            d = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise CircuitForgeError(f"{path}: cannot read benchmark config: {e}") from e
        for k in ("methods", "seeds", "deterministic", "extra_schemes"):
            if k in d:
                d[k] = tuple(d[k])
        try:
            cfg = cls(**d)
        except TypeError as e:
            raise CircuitForgeError(f"{path}: {e}") from e
        unknown = set(cfg.sweep) - set(cfg.methods)
        if unknown:
            raise CircuitForgeError(f"{path}: [sweep] names methods not in `methods`: {', '.join(sorted(unknown))}")
        return cfg

    def split_names(self) -> list[str]:
        return [f"split{i}" for i in range(self.n_splits)]

    def cells(self) -> list[tuple[str, str, int]]:
        """(method, split, seed), split-major so that each split's shared work is done once, early."""
        return [(m, sp, s) for sp in self.split_names() for m in self.methods
                for s in (self.seeds[:1] if m in self.deterministic else self.seeds)]


def make_splits(cfg: BenchConfig) -> tuple[Any, list[Any]]:
    """The calibration split and the evaluation splits of ``cfg.pool``."""
    from circuitforge.data import load_task
    from circuitforge.data.splits import builtin_pool, pool_from_tasks, resample

    if cfg.pool == "builtin":
        pool = builtin_pool()
    elif cfg.pool.startswith("builtin:"):   # a model's own filtered pool (benchmarks/build_slices.py)
        from circuitforge.data.task import BUILTIN_DIR

        d = BUILTIN_DIR / cfg.pool.split(":", 1)[1]
        if not (d / "chemistry_pool.jsonl").is_file():
            raise CircuitForgeError(f"pool {cfg.pool!r}: no {d.name}/chemistry_pool.jsonl among the built-in data "
                                    "(python benchmarks/build_slices.py --models MODEL writes it)")
        pool = builtin_pool(d)
    elif cfg.pool == "tiny-facts":
        pool = pool_from_tasks("tiny-facts", load_task("tiny-facts:forget"), load_task("tiny-facts:forget_paraphrase"))
    else:
        raise CircuitForgeError(f"pool must be 'builtin', 'builtin:MODEL' or 'tiny-facts', not {cfg.pool!r}")
    return resample(cfg.n_splits, cfg.n_forget, cfg.n_retain_same, cfg.n_unknown, cfg.split_seed,
                    cfg.calibration_share, pool, n_retain_train=cfg.n_retain_same_train)


def method_retain(retain: Any, split: Any) -> Any:
    """The retain rows a method is given on ``split``: the general ``retain`` rows, then the split's
    ``retain_train`` rows when it has any (a new task; neither input is changed)."""
    from circuitforge.data.task import Task

    if not len(split.retain_train):
        return retain
    if split.retain_train.kind != retain.kind:
        raise CircuitForgeError(f"retain {retain.name!r} is {retain.kind}, {split.retain_train.name!r} is "
                                f"{split.retain_train.kind}: they cannot be one retain set")
    return Task(f"{retain.name}+{split.retain_train.name}", retain.kind, retain.items + split.retain_train.items,
                "splits")


def _relearn_settings(cfg: BenchConfig, seed: int) -> Any:
    from circuitforge.eval.relearn import RelearnSettings

    d = dict(cfg.relearn)
    if "budgets" in d:
        d["budgets"] = tuple(d["budgets"])
    return RelearnSettings(seed=seed, **d)


# ---------------------------------------------------------------------------------------------- sweep


def sweep_grid(cfg: BenchConfig, method: str) -> list[dict[str, Any]]:
    grid = cfg.sweep.get(method)
    if not grid:
        return []
    names = sorted(grid)
    return [dict(zip(names, vals, strict=True)) for vals in itertools.product(*(grid[n] for n in names))]


def run_sweep(cfg: BenchConfig, out_dir: Path, base: Any, cal: Any, retain: Any, say: Say) -> dict[str, Any]:
    """Each swept baseline's grid on the calibration split; choose per method (see module docstring).

    Every grid point is cached in ``sweep/<method>-<i>.json``; the choice is written to ``sweep.json``.
    """
    from circuitforge.data import evaluate
    from circuitforge.surgery import unlearn

    base_f, base_r, base_s = (evaluate(base, t).accuracy for t in (cal.forget, retain, cal.retain_same))
    out: dict[str, Any] = {"calibration": cal.identity(), "target_forget_acc": cfg.sweep_target, "methods": {}}
    for method in cfg.methods:
        grid = sweep_grid(cfg, method)
        if not grid:
            continue
        points = []
        for i, point in enumerate(grid):
            path = out_dir / "sweep" / f"{method}-{i}.json"
            settings = {**cfg.settings.get(method, {}), **point}
            if path.exists():
                rec = json.loads(path.read_text())
                if is_current(cfg, method, rec, settings):
                    points.append(rec)
                    continue
            say(f"sweep {method} {point}")
            t0 = time.time()
            m = unlearn(base, cal.forget, method_retain(retain, cal), method=method, seed=0, **settings).handle
            f, r, s = (evaluate(m, t).accuracy for t in (cal.forget, retain, cal.retain_same))
            rec = {"point": point, "settings": settings, "forget_acc": f, "retain_drop": base_r - r,
                   "retain_same_drop": base_s - s, "reached": f <= cfg.sweep_target, "seconds": time.time() - t0,
                   "config_version": cfg.version, "resolved_settings": resolved_settings(method, settings)}
            write_json_atomic(path, rec)
            points.append(rec)
        reached = [p for p in points if p["reached"]]
        best = (min(reached, key=lambda p: p["retain_drop"] + p["retain_same_drop"]) if reached
                else min(points, key=lambda p: p["forget_acc"]))
        out["methods"][method] = {"points": points, "chosen": best["point"], "reached_target": bool(reached),
                                  "base": {"forget": base_f, "retain": base_r, "retain_same": base_s}}
        say(f"sweep {method}: chose {best['point']} (forget {best['forget_acc']:.3f}, "
            f"retain drop {best['retain_drop']:.3f}{'' if reached else ', target not reached'})")
    write_json_atomic(out_dir / "sweep.json", out)
    return out


def method_settings(cfg: BenchConfig, method: str, sweep: dict[str, Any]) -> dict[str, Any]:
    chosen = sweep.get("methods", {}).get(method, {}).get("chosen", {})
    return {**cfg.settings.get(method, {}), **chosen}


def resolved_settings(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Every field of ``method``'s settings with ``settings`` applied over the library's defaults, as JSON
    values: what a cell records so that a changed library default makes it stale (the overrides alone
    stay equal when a default changes)."""
    import dataclasses

    from circuitforge.surgery import settings_class

    d = dataclasses.asdict(settings_class(method)(**settings))
    return json.loads(json.dumps(d))  # type: ignore[no-any-return]


def settings_changes(method: str, recorded: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """Fields whose recorded resolved value differs from today's: ``name → recorded value`` (``"–"``: a field
    the cell lacks). A field the cell lacks is no change while today's value is the field's default: fields
    added since keep the earlier behaviour at their default (the convention every new setting follows), so
    adding an option does not make finished cells stale; setting it does, and so does a changed default of a
    field the cell recorded."""
    defaults = resolved_settings(method, {})
    out: dict[str, Any] = {}
    for k in sorted(set(recorded) | set(now)):
        if k not in recorded and now.get(k) == defaults.get(k):
            continue
        if recorded.get(k, "–") != now.get(k, "–"):
            out[k] = recorded.get(k, "–")
    return out


# ------------------------------------------------------------------------------------------ per split


def split_context(cfg: BenchConfig, out_dir: Path, split: Any, base: Any, retain: Any, say: Say) -> dict[str, Any]:
    """Base-model outcomes on every task of ``split`` (cached in ``splits/<name>.json``) and its circuit."""
    from circuitforge.circuits import Circuit, CircuitSearch
    from circuitforge.data import evaluate
    from circuitforge.data.splits import scored_identity
    from circuitforge.eval.relearn import base_curve
    from circuitforge.quant import quantized_copy

    search = CircuitSearch(rows=cfg.cad_rows, **cfg.search)
    cpath = out_dir / "circuits" / f"{split.name}.json"
    circuit = Circuit.from_json(cpath) if cpath.exists() else None
    if circuit is not None and search.matches(circuit, base, split.forget):
        say(f"{split.name}: reused circuit ({circuit.n_edges} edges)")
    else:
        say(f"{split.name}: finding the base forget circuit")
        circuit = search.find(base, split.forget)
        cpath.parent.mkdir(parents=True, exist_ok=True)
        circuit.to_json(cpath)
    path = out_dir / "splits" / f"{split.name}.json"
    # the base outcomes do not read ``retain_train``: splits that differ only there share them
    ident = {"split": scored_identity(split.identity()),
             "retain": retain.identity(), "model": base.identity(),
             "relearn": asdict(_relearn_settings(cfg, 0)), "schemes": [cfg.scheme, *cfg.extra_schemes]}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("identity") == json.loads(json.dumps(ident)):
            return {"base": cached["base"], "circuit": circuit}
    say(f"{split.name}: base-model outcomes and relearning curve")
    b: dict[str, Any] = {t: list(evaluate(base, split.part(t)).correct)
                         for t in ("forget", "retain_same", "paraphrase", "relearn_held")}
    b["retain"] = list(evaluate(base, retain).correct)
    for sch in [cfg.scheme, *cfg.extra_schemes]:
        b[f"forget_{sch}"] = list(evaluate(quantized_copy(base, sch), split.forget).correct)
    curve = base_curve(base, split.relearn_train, split.relearn_held, _relearn_settings(cfg, 0))
    b["relearn_curve"] = {str(k): list(v) for k, v in curve.items()}
    write_json_atomic(path, {"identity": ident, "base": b})
    return {"base": b, "circuit": circuit}


def run_cell(cfg: BenchConfig, method: str, seed: int, split: Any, retain: Any, base: Any,
             ctx: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """One method × split × seed: unlearn, assess, extra tasks, extra schemes, diagnostics, relearning."""
    from circuitforge.cad import CADSettings
    from circuitforge.data import evaluate
    from circuitforge.eval.assess import assess
    from circuitforge.eval.relearn import relearning_attack
    from circuitforge.quant import diff_report, quantized_copy
    from circuitforge.surgery import unlearn

    t0 = time.time()
    # MANSU finds its own edit set (its neuron circuit within ``circuit_budget``) on the split's forget rows:
    # the split's edge circuit (for CAD) keeps whole MLPs and would make its mask most of the model.
    res = unlearn(base, split.forget, method_retain(retain, split), method=method, seed=seed, **settings)
    t_unlearn = time.time() - t0
    m = res.handle
    a = assess(base, m, split.forget, retain, circuit=ctx["circuit"], scheme=cfg.scheme, cad_rows=cfg.cad_rows,
               cad_settings=CADSettings(seed=seed, **cfg.cad), seed=seed)
    fp_e, q = a.survival["fp"]["edited"], a.survival["schemes"][cfg.scheme]
    correct: dict[str, list[bool]] = {
        "forget": list(fp_e["forget_correct"]), "retain": list(fp_e["retain_correct"]),
        f"forget_{cfg.scheme}": list(q["edited"]["forget_correct"]),
        "retain_same": list(evaluate(m, split.retain_same).correct),
        "paraphrase": list(evaluate(m, split.paraphrase).correct),
    }
    for sch in cfg.extra_schemes:
        correct[f"forget_{sch}"] = list(evaluate(quantized_copy(m, sch), split.forget).correct)
    diag = diff_report(base, m, cfg.scheme, per_tensor=False)
    curve = {int(k): tuple(v) for k, v in ctx["base"]["relearn_curve"].items()}
    rl = relearning_attack(None, m, split.relearn_train, split.relearn_held, _relearn_settings(cfg, 0),
                           unknown=split.unknown if len(split.unknown) else None, base_attacked=curve)
    return {
        "method": method, "split": split.name, "seed": seed, "settings": settings,
        "resolved_settings": resolved_settings(method, settings),
        "scorecard": a.scorecard.to_dict(), "correct": correct, "relearn": rl.to_dict(),
        "median_binwidth_to_update_ratio": diag.get("median_binwidth_to_update_ratio"),
        "code_flip_rate": diag.get("code_flip_rate"), "changed_share": diag.get("changed_share"),
        "stop_reason": getattr(res, "stop_reason", None), "unlearn_seconds": t_unlearn,
        "edited": m.identity(), "split_identity": split.identity(), "seconds": time.time() - t0,
    }


def refresh_cad_cell(cfg: BenchConfig, cell: dict[str, Any], split: Any, retain: Any, base: Any,
                     ctx: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any] | None:
    """A finished cell with its CAD evidence recomputed under the current format: the method is rerun
    (deterministic from the cell's seed) and, when the rebuilt weights equal the cell's (sha256 of
    ``edited``), only CAD is measured again, so the accuracies, NF4 and relearning columns stay the measured
    ones of these very weights; the structural-erasure property is re-judged from the new evidence. ``None``
    when the weights differ (another machine, another library version): the caller reruns the whole cell."""
    from circuitforge.cad import CADSettings
    from circuitforge.eval.assess import cad_step
    from circuitforge.eval.scorecard import Scorecard, judge
    from circuitforge.surgery import unlearn

    t0 = time.time()
    m = unlearn(base, split.forget, method_retain(retain, split), method=cell["method"], seed=cell["seed"],
                **settings).handle
    if m.sha256 != cell["edited"]["sha256"]:
        return None
    c = cad_step(base, m, split.forget.head(cfg.cad_rows), retain, ctx["circuit"],
                 CADSettings(seed=cell["seed"], **cfg.cad), cfg.cad_rows)
    card = Scorecard.from_dict(cell["scorecard"])
    old = {k: getattr(card, k) for k in ("forgetting", "retain", "ptq_gap", "structural_erasure")}
    values = {k: p.value for k, p in old.items() if k != "structural_erasure"}
    cis = {k: tuple(p.extra["ci"]) for k, p in old.items() if k != "structural_erasure" and "ci" in p.extra}
    n = {k: int(p.extra["n"]) for k, p in old.items() if "n" in p.extra}
    props = judge(values, c.summary(), card.thresholds, cis=cis, n=n, scheme=cfg.scheme)  # type: ignore[arg-type]
    new = replace(card, **props, cad=c.summary())  # type: ignore[arg-type]
    return {**cell, "scorecard": new.to_dict(), "seconds": cell["seconds"],
            "cad_refreshed": {"from": cell["scorecard"]["cad"].get("format", "circuitforge.cad/3 or earlier"),
                              "verdict_before": cell["scorecard"]["cad"].get("verdict"),
                              "seconds": time.time() - t0, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}


# ------------------------------------------------------------------------------------------------ run


def run_bench(cfg: BenchConfig, out_dir: Path, command: str = "", progress: Say | None = None,
              max_cells: int | None = None, workers: int = 1, only_splits: tuple[str, ...] | None = None,
              write_results: bool = True) -> dict[str, Any]:
    """Run (or resume) the benchmark; write ``results.json`` and ``results.md`` in ``out_dir`` after every
    cell (so an interrupted run leaves a summary of what finished). ``max_cells``: stop after computing
    that many new cells (per worker). Returns the results document.

    ``workers`` > 1: the sweep is run here first, then the splits with unfinished cells are dealt round-robin
    to that many worker processes (each loads the model, uses ``cores ÷ workers`` torch threads and writes
    its cells, circuits and base outcomes to ``out_dir`` as a single run would); the summary is written once
    they are done. Every cell is computed from its own seed and split, so it is the same whichever process
    computes it (tested). ``only_splits`` / ``write_results`` are how a worker is restricted."""
    from circuitforge.data import load_task
    from circuitforge.eval.bench_summary import markdown, summarise
    from circuitforge.models import load

    say = progress or (lambda s: None)
    t_start = time.time()
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    base = load(cfg.model, device=cfg.device, dtype=cfg.dtype)
    retain = load_task(cfg.retain).head(cfg.n_retain)
    cal, splits = make_splits(cfg)
    sweep = run_sweep(cfg, out_dir, base, cal, retain, say) if cfg.sweep else {}
    if workers > 1:
        def stale(c: dict[str, Any] | None) -> bool:
            return c is None or not cad_current(c)

        pending = [sp for sp in cfg.split_names()
                   if any(stale(_cell_or_none(cfg, out_dir, m, s, seed, sweep)) for m, s, seed in cfg.cells() if s == sp)]
        _run_workers(cfg, out_dir, pending, workers, max_cells, say)
        return _write(cfg, out_dir, _finished(cfg, out_dir, sweep), sweep, command, t_start, markdown, summarise)
    ctxs: dict[str, dict[str, Any]] = {}
    by_name = {s.name: s for s in splits}
    new = 0
    for method, sp, seed in cfg.cells():
        if only_splits is not None and sp not in only_splits:
            continue
        settings = method_settings(cfg, method, sweep)
        cell = _cell_or_none(cfg, out_dir, method, sp, seed, sweep)
        if cell is not None and not cad_current(cell) and (max_cells is None or new < max_cells):
            if sp not in ctxs:
                ctxs[sp] = split_context(cfg, out_dir, by_name[sp], base, retain, say)
            say(f"{method} {sp} seed {seed}: refreshing its CAD evidence (stored format "
                f"{cell['scorecard']['cad'].get('format', 'cad/3 or earlier')})")
            fresh = refresh_cad_cell(cfg, cell, by_name[sp], retain, base, ctxs[sp], settings)
            new += 1
            if fresh is None:
                say(f"{method} {sp} seed {seed}: the rebuilt weights differ from the cell's; rerunning it")
                cell = None
            else:
                write_json_atomic(out_dir / "cells" / f"{method}-{sp}-seed{seed}.json", fresh)
                say(f"{method} {sp} seed {seed}: CAD {cell['scorecard']['cad'].get('verdict')} → "
                    f"{fresh['scorecard']['cad']['verdict']} ({fresh['cad_refreshed']['seconds']:.0f} s)")
                if write_results:  # every finished cell, those not reached yet included (stale ones marked)
                    _write(cfg, out_dir, _finished(cfg, out_dir, sweep), sweep, command, t_start, markdown, summarise)
                continue
        if cell is not None:
            say(f"{method} {sp} seed {seed}: done earlier, reused")
            continue
        if max_cells is not None and new >= max_cells:
            continue
        if sp not in ctxs:
            ctxs[sp] = split_context(cfg, out_dir, by_name[sp], base, retain, say)
        say(f"{method} {sp} seed {seed}: running")
        cell = {**run_cell(cfg, method, seed, by_name[sp], retain, base, ctxs[sp], settings),
                "config_version": cfg.version}
        write_json_atomic(out_dir / "cells" / f"{method}-{sp}-seed{seed}.json", cell)
        new += 1
        say(f"{method} {sp} seed {seed}: {cell['seconds']:.0f} s")
        if write_results:  # a summary of what finished so far, in case the run is interrupted
            _write(cfg, out_dir, _finished(cfg, out_dir, sweep), sweep, command, t_start, markdown, summarise)
    if not write_results:
        return {}
    # always once more at the end (also when nothing was computed): the summary of every finished cell
    return _write(cfg, out_dir, _finished(cfg, out_dir, sweep), sweep, command, t_start, markdown, summarise)


def _finished(cfg: BenchConfig, out_dir: Path, sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every finished cell of the configuration on disk, in cell order (cells with CAD evidence of an older
    format included: the summary marks them)."""
    return [c for c in (_cell_or_none(cfg, out_dir, m, sp, seed, sweep) for m, sp, seed in cfg.cells()) if c]


def _cell_or_none(cfg: BenchConfig, out_dir: Path, method: str, sp: str, seed: int,
                  sweep: dict[str, Any]) -> dict[str, Any] | None:
    """The finished cell, when its file exists with this config version and these settings (and, when it
    recorded them, the same resolved settings: a cell made under other library defaults is recomputed)."""
    path = out_dir / "cells" / f"{method}-{sp}-seed{seed}.json"
    if not path.exists():
        return None
    cell = json.loads(path.read_text())
    # a cell made with another number of same-domain rows given to the methods is another experiment
    given = cell.get("split_identity", {}).get("retain_train", {}).get("n", 0)
    if given != cfg.n_retain_same_train:
        return None
    return cell if is_current(cfg, method, cell, method_settings(cfg, method, sweep)) else None


def is_current(cfg: BenchConfig, method: str, rec: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether a stored cell or sweep point ``rec`` was made by this config version with these ``settings``
    overrides and (when it recorded them) the same resolved settings, so that a point or cell made under
    other library defaults is recomputed. Records written before resolved settings were recorded are reused
    on their overrides alone."""
    settings = json.loads(json.dumps(settings))
    if rec.get("config_version") != cfg.version or rec.get("settings") != settings:
        return False
    return "resolved_settings" not in rec or not settings_changes(method, rec["resolved_settings"],
                                                                 resolved_settings(method, settings))


def _worker(cfg: BenchConfig, out_dir: str, splits: tuple[str, ...], max_cells: int | None, tag: str,
            threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    run_bench(cfg, Path(out_dir), progress=lambda m: print(f"[{tag}] {m}", flush=True), max_cells=max_cells,
              only_splits=splits, write_results=False)


def _run_workers(cfg: BenchConfig, out_dir: Path, pending: list[str], workers: int, max_cells: int | None,
                 say: Say) -> None:
    """Deal ``pending`` splits round-robin to ``workers`` spawned processes and wait for all of them."""
    import multiprocessing as mp

    groups = [tuple(pending[i::workers]) for i in range(workers)]
    groups = [g for g in groups if g]
    if not groups:
        return
    threads = max(1, (os.cpu_count() or 1) // len(groups))
    ctx = mp.get_context("spawn")
    procs = []
    for i, g in enumerate(groups):
        say(f"worker {i + 1}: {', '.join(g)} ({threads} torch thread(s))")
        p = ctx.Process(target=_worker, args=(cfg, str(out_dir), g, max_cells, f"w{i + 1}", threads))
        p.start()
        procs.append((p, g))
    failed = []
    for p, g in procs:
        p.join()
        if p.exitcode != 0:
            failed.append(f"{', '.join(g)} (exit {p.exitcode})")
    if failed:
        raise CircuitForgeError("benchmark worker failed on " + "; ".join(failed) + " (finished cells are kept)")


def _write(cfg: BenchConfig, out_dir: Path, cells: list[dict[str, Any]], sweep: dict[str, Any], command: str,
           t_start: float, markdown: Any, summarise: Any) -> dict[str, Any]:
    base_cache = {p.stem: json.loads(p.read_text())["base"] for p in sorted((out_dir / "splits").glob("*.json"))}
    summary = summarise(cfg, cells, base_cache)
    meta = {"model": cfg.model, "config": asdict(cfg), "command": command, "seconds": time.time() - t_start,
            "cell_seconds": sum(c["seconds"] for c in cells), "cores": os.cpu_count(), "versions": versions(),
            "n_cells": len(cells), "n_cells_planned": len(cfg.cells()),
            "splits_run": sorted({c["split"] for c in cells}), "sweep": sweep}
    doc = {"format": FORMAT, **meta, **summary, "cells": cells}
    write_json_atomic(out_dir / "results.json", doc)
    write_text_atomic(out_dir / "results.md", markdown(doc))
    return doc


def with_subset(cfg: BenchConfig, methods: str | None = None, splits: int | None = None,
                seeds: str | None = None) -> BenchConfig:
    """``cfg`` restricted from the command line (methods subset, fewer splits, other seeds)."""
    if methods:
        wanted = tuple(m.strip() for m in methods.split(","))
        unknown = set(wanted) - set(cfg.methods)
        if unknown:
            raise CircuitForgeError(f"--methods: not in the config: {', '.join(sorted(unknown))}")
        cfg = replace(cfg, methods=wanted, sweep={k: v for k, v in cfg.sweep.items() if k in wanted})
    if splits is not None:
        cfg = replace(cfg, n_splits=splits)
    if seeds:
        try:
            cfg = replace(cfg, seeds=tuple(int(s) for s in seeds.split(",")))
        except ValueError as e:
            raise CircuitForgeError(f"--seeds: {e}") from e
    return cfg
