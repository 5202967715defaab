"""Resampled forget / retain splits of the chemistry pool, drawn by fact so that no fact sits on two sides.

The benchmark cannot tell methods apart on one fixed forget set: a deterministic method gives the same
number on every seed, and 64 items resolve differences no finer than 1/64. So the variance comes from
resampling *which facts are forgotten*. :func:`resample` draws ``n`` splits of the pool
(``builtin:chemistry_pool``, ≥ 300 chemistry rows SmolLM2-135M-Instruct answers correctly, each with a
``fact`` key) into:

* ``forget``: rows of the targeted facts;
* ``retain_same``: untargeted facts of the *same domain* (chemistry) — what the general retain set
  (capitals, general facts) cannot see: an edit that removes chemistry it was not asked to;
* ``retain_train`` (only when ``n_retain_train`` > 0; empty otherwise): *other* untargeted same-domain facts,
  disjoint from both sets above, that a method may be given as retain rows (issue 16: "the same-domain retain
  facts in the retain set"), so that ``retain_same`` stays a held-out measure of what the edit spared;
* ``paraphrase``: other wordings of the *targeted* facts only (``builtin:chemistry_paraphrase``);
* ``relearn_train`` / ``relearn_held``: the forget rows split by fact into two halves; an attacker
  fine-tunes on one and is scored on the other, so a fact and its reversal (symbol ↔ element, formula ↔
  compound, which share a key) never sit on both sides;
* ``unknown``: rows the base model clearly gets wrong (``builtin:chemistry_unknown``), none about a
  ``relearn_train`` fact: the attack's floor (what fine-tuning teaches about facts that were never there).

A calibration split is drawn first from its own facts (``calibration_share`` of the rows) and the
evaluation splits never use them, so baseline hyperparameters tuned on it do not see the evaluated facts.

>>> from circuitforge.data.splits import resample            # doctest: +SKIP
>>> cal, splits = resample(n_splits=5, n_forget=64, n_retain=64, seed=0)  # doctest: +SKIP
>>> splits[0].forget, splits[0].retain_same, splits[0].facts["forget"][:3]  # doctest: +SKIP

Deterministic: the same arguments and pool files give the same splits (``Split.identity`` hashes them).
"""

import json
import random
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitforge._provenance import sha256_json
from circuitforge.data.task import BUILTIN_DIR, Task, task_from_rows
from circuitforge.errors import CircuitForgeError

POOL = "chemistry_pool"
PARAPHRASE = "chemistry_paraphrase"
UNKNOWN = "chemistry_unknown"
PARTS = ("forget", "retain_same", "paraphrase", "relearn_train", "relearn_held", "unknown")
"""the parts every split has, and scores (``retain_train``, rows a method may be given, is the optional one)"""
ALL_PARTS = (*PARTS, "retain_train")


def read_rows(name: str, directory: Path = BUILTIN_DIR) -> list[dict[str, Any]]:
    """Rows of a keyed pool file (every row has ``fact`` and ``template``)."""
    path = directory / f"{name}.jsonl"
    if not path.is_file():
        raise CircuitForgeError(f"{path}: missing (regenerate with benchmarks/build_builtin.py --pool-only)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, r in enumerate(rows):
        if not isinstance(r.get("fact"), str) or not r["fact"]:
            raise CircuitForgeError(f"{path}, row {i + 1}: field 'fact' missing (a pool row needs its fact key)")
    return rows


@dataclass(frozen=True)
class Split:
    """One resampled split. ``facts[part]`` lists the fact keys of each part (sorted)."""

    name: str
    forget: Task
    retain_same: Task
    paraphrase: Task
    relearn_train: Task
    relearn_held: Task
    unknown: Task
    """never-known rows (may be empty: no floor)"""
    facts: dict[str, tuple[str, ...]]
    retain_train: Task
    """same-domain rows a method may train on as retain rows, disjoint by fact from every other part (empty
    unless ``n_retain_train`` > 0)"""

    def part(self, name: str) -> Task:
        if name not in ALL_PARTS:
            raise CircuitForgeError(f"no split part {name!r} (have: {', '.join(ALL_PARTS)})")
        return getattr(self, name)  # type: ignore[no-any-return]

    def identity(self) -> dict[str, Any]:
        """Name, size and content hash of every part (recorded with each benchmark cell); ``retain_train`` only
        when it has rows, so the splits drawn without it keep the identities they were recorded with."""
        parts = ALL_PARTS if len(self.retain_train) else PARTS
        return {"name": self.name, **{p: {"n": len(self.part(p)), "sha256": self.part(p).sha256} for p in parts}}


def scored_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """A :meth:`Split.identity` without ``retain_train``: what two runs must share for their scores to pair
    (the rows a method was given may differ; no score reads them)."""
    return {k: v for k, v in identity.items() if k != "retain_train"}


def _rng(*parts: object) -> random.Random:
    return random.Random(zlib.crc32("\x1f".join(map(str, parts)).encode()))


def _task(rows: list[dict[str, Any]], name: str) -> Task:
    if not rows:
        raise CircuitForgeError(f"{name}: no rows (the pool is too small for these split sizes)")
    return task_from_rows(rows, name, source="splits")


def _take(by_fact: dict[str, list[dict[str, Any]]], keys: list[str], n: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Whole facts in ``keys`` order until ``n`` rows; the last fact may be cut (its other rows unused)."""
    rows: list[dict[str, Any]] = []
    used: list[str] = []
    for k in keys:
        if len(rows) >= n:
            break
        rows += by_fact[k]
        used.append(k)
    return rows[:n], used


def _make(name: str, seed: object, keys: list[str], by_fact: dict[str, list[dict[str, Any]]],
          para: dict[str, list[dict[str, Any]]], unknown: list[dict[str, Any]],
          n_forget: int, n_retain: int, n_unknown: int, n_retain_train: int = 0) -> Split:
    keys = list(keys)
    _rng("split", seed).shuffle(keys)
    forget_rows, forget_keys = _take(by_fact, keys, n_forget)
    rest = [k for k in keys if k not in set(forget_keys)]
    retain_rows, retain_keys = _take(by_fact, rest, n_retain)
    # drawn after every other part and shuffled by its own generator: the other parts are the same with or
    # without it (tested)
    train_rest = [k for k in rest if k not in set(retain_keys)]
    retain_train_rows = _take(by_fact, train_rest, n_retain_train)[0] if n_retain_train > 0 else []
    if len(retain_train_rows) < n_retain_train:
        raise CircuitForgeError(f"{name}: only {len(retain_train_rows)} rows left for n_retain_train={n_retain_train}")
    _rng("retain_train", seed).shuffle(retain_train_rows)
    forget_keys = sorted({r["fact"] for r in forget_rows})  # facts actually present after the cut
    halves = list(forget_keys)
    _rng("relearn", seed).shuffle(halves)
    train_keys, held_keys = set(halves[0::2]), set(halves[1::2])
    order = _rng("order", seed)
    order.shuffle(forget_rows)  # mix templates; the prefix used by the circuit search is a fair sample
    order.shuffle(retain_rows)
    para_rows = [r for k in forget_keys for r in para.get(k, [])]
    order.shuffle(para_rows)
    floor = [r for r in unknown if r["fact"] not in train_keys]
    order.shuffle(floor)
    floor = floor[:n_unknown]
    return Split(
        name=name,
        forget=_task(forget_rows, f"{name}/forget"),
        retain_same=_task(retain_rows, f"{name}/retain_same"),
        paraphrase=_task(para_rows, f"{name}/paraphrase"),
        relearn_train=_task([r for r in forget_rows if r["fact"] in train_keys], f"{name}/relearn_train"),
        relearn_held=_task([r for r in forget_rows if r["fact"] in held_keys], f"{name}/relearn_held"),
        unknown=_task(floor, f"{name}/unknown") if floor else Task(f"{name}/unknown", "cloze", ()),
        retain_train=(_task(retain_train_rows, f"{name}/retain_train") if retain_train_rows
                      else Task(f"{name}/retain_train", "cloze", ())),
        facts={"forget": tuple(forget_keys), "retain_same": tuple(sorted({r["fact"] for r in retain_rows})),
               "retain_train": tuple(sorted({r["fact"] for r in retain_train_rows})),
               "relearn_train": tuple(sorted(train_keys)), "relearn_held": tuple(sorted(held_keys)),
               "paraphrase": tuple(sorted({r["fact"] for r in para_rows})),
               "unknown": tuple(sorted({r["fact"] for r in floor}))},
    )


@dataclass(frozen=True)
class Pool:
    """Keyed rows to resample: ``rows`` (known facts), ``paraphrase`` (other wordings, keyed the same way)
    and ``unknown`` (never-known rows; may be empty, then the relearning floor is 0)."""

    name: str
    rows: tuple[dict[str, Any], ...]
    paraphrase: tuple[dict[str, Any], ...]
    unknown: tuple[dict[str, Any], ...] = ()


def builtin_pool(directory: Path = BUILTIN_DIR) -> Pool:
    """The shipped chemistry pool (``chemistry_pool``, ``chemistry_paraphrase``, ``chemistry_unknown``), or a
    model's filtered copy of it in ``directory`` (``BUILTIN_DIR / "gemma3-270m"``)."""
    name = "builtin:chemistry" if directory == BUILTIN_DIR else f"builtin:{directory.name}/chemistry"
    return Pool(name, tuple(read_rows(POOL, directory)), tuple(read_rows(PARAPHRASE, directory)),
                tuple(read_rows(UNKNOWN, directory)))


def pool_from_tasks(name: str, rows: Task, paraphrase: Task, key: str = r"\S+(?= is\b)") -> Pool:
    """A pool from unkeyed tasks: each row's fact key is the first match of the regex ``key`` in its prompt
    (the default takes the word before " is": ``elem7`` in "the symbol of elem7 is"). Rows without a match
    are an error. Used for the tiny-facts world (no never-known rows)."""
    import re

    def keyed(task: Task) -> tuple[dict[str, Any], ...]:
        out = []
        for i, it in enumerate(task.items):
            d = dict(it.__dict__)
            m = re.search(key, d.get("prompt", ""))
            if m is None:
                raise CircuitForgeError(f"{task.name}, row {i + 1}: no fact key ({key!r}) in the prompt")
            d["fact"] = m.group(0)
            d["distractors"] = list(d.get("distractors", ()))
            out.append({k: v for k, v in d.items() if v is not None})
        return tuple(out)

    return Pool(name, keyed(rows), keyed(paraphrase), ())


def resample(n_splits: int = 5, n_forget: int = 64, n_retain: int = 64, n_unknown: int = 64, seed: int = 0,
             calibration_share: float = 0.15, pool: Pool | None = None,
             n_retain_train: int = 0) -> tuple[Split, list[Split]]:
    """The calibration split and ``n_splits`` evaluation splits of the pool (see the module docstring).

    Args:
        n_splits: evaluation splits, each an independent reshuffle of the non-calibration facts.
        n_forget: forget rows per split (whole facts, the last one possibly cut).
        n_retain: same-domain retain rows per split (from facts not in that split's forget set).
        n_unknown: never-known rows per split at most (the relearning floor).
        seed: one seed for everything; split ``i`` is derived from ``(seed, i)``.
        calibration_share: share of the pool rows (by whole facts) held out for the calibration split.
        pool: the rows to resample (default: :func:`builtin_pool`).
        n_retain_train: same-domain rows per split a method may train on as retain rows (``retain_train``:
            facts in none of the split's other parts); 0: none (the other parts are the same either way).
    """
    if n_splits < 1 or n_forget < 2 or n_retain < 1 or n_unknown < 1 or n_retain_train < 0:
        raise CircuitForgeError("need n_splits ≥ 1, n_forget ≥ 2, n_retain ≥ 1, n_unknown ≥ 1, n_retain_train ≥ 0")
    if not 0 < calibration_share < 1:
        raise CircuitForgeError("calibration_share must lie in (0, 1)")
    pool = pool or builtin_pool()
    by_fact: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in pool.rows:
        by_fact[r["fact"]].append(r)
    para: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in pool.paraphrase:
        para[r["fact"]].append(r)
    keys = sorted(by_fact)
    _rng("calibration", seed).shuffle(keys)
    total = sum(len(v) for v in by_fact.values())
    cal_keys: list[str] = []
    n_cal = 0
    for k in keys:
        if n_cal >= calibration_share * total:
            break
        cal_keys.append(k)
        n_cal += len(by_fact[k])
    eval_keys = sorted(set(keys) - set(cal_keys))
    if sum(len(by_fact[k]) for k in eval_keys) < n_forget + n_retain + n_retain_train:
        raise CircuitForgeError(f"{pool.name}: too few rows outside calibration for n_forget={n_forget} + "
                                f"n_retain={n_retain} + n_retain_train={n_retain_train}")
    cal_unknown = [r for r in pool.unknown if r["fact"] in set(cal_keys)]
    if n_retain_train > 0:  # forget / same-domain retain / retain_train in thirds
        cal = _make("calibration", (seed, "calibration"), sorted(cal_keys), by_fact, para, cal_unknown,
                    n_cal // 3, n_cal // 3, n_unknown, n_cal - 2 * (n_cal // 3))
    else:
        cal = _make("calibration", (seed, "calibration"), sorted(cal_keys), by_fact, para, cal_unknown,
                    n_cal // 2, n_cal - n_cal // 2, n_unknown)
    eval_unknown = [r for r in pool.unknown if r["fact"] not in set(cal_keys)]
    splits = [_make(f"split{i}", (seed, i), eval_keys, by_fact, para, eval_unknown, n_forget, n_retain, n_unknown,
                    n_retain_train) for i in range(n_splits)]
    return cal, splits


def describe(splits: list[Split]) -> dict[str, Any]:
    """Sizes and overlap of the splits: how often each fact is targeted (for the data card and results)."""
    targeted: dict[str, int] = defaultdict(int)
    for s in splits:
        for k in s.facts["forget"]:
            targeted[k] += 1
    return {"splits": [s.identity() for s in splits], "facts_targeted_at_least_once": len(targeted),
            "max_times_targeted": max(targeted.values(), default=0),
            "sha256": sha256_json([s.identity() for s in splits])}
