"""Resampled splits of the shipped chemistry pool: sizes, determinism, and hygiene — no fact on two sides
(forget vs same-domain retain, relearning train vs held, calibration vs evaluation), no reversed pair
(symbol ↔ element, formula ↔ compound) across the relearning halves, paraphrases only of targeted facts,
never-known rows never about a relearning-train fact. No model needed."""

import itertools
import re

import pytest

from circuitforge.data import load_task
from circuitforge.data.splits import PARTS, builtin_pool, pool_from_tasks, resample
from circuitforge.errors import CircuitForgeError


@pytest.fixture(scope="module")
def splits():
    return resample(n_splits=5, n_forget=64, n_retain=64, n_unknown=48, seed=0)


def _facts(task):
    pool = {r["prompt"]: r["fact"] for r in builtin_pool().rows + builtin_pool().paraphrase + builtin_pool().unknown}
    return {pool[it.prompt] for it in task.items}


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text) is not None


def _reversed(a, b) -> bool:
    """b states a's fact backwards: each one's answer appears in the other's prompt."""
    return _mentions(b.prompt, a.answer.strip()) and _mentions(a.prompt, b.answer.strip())


def test_pool_size_and_keys():
    pool = builtin_pool()
    assert len(pool.rows) >= 300
    assert all(r["fact"] and r["template"] for r in pool.rows + pool.paraphrase + pool.unknown)
    assert len({r["prompt"] for r in pool.rows}) == len(pool.rows)
    known = {r["prompt"] for r in pool.rows}
    assert not known & {r["prompt"] for r in pool.unknown}  # a row is either known or never known
    assert len(pool.unknown) >= 48


def test_sizes_and_parts(splits):
    cal, sps = splits
    assert len(sps) == 5
    for s in sps:
        assert len(s.forget) == 64 and len(s.retain_same) == 64
        assert 0 < len(s.unknown) <= 48 and len(s.paraphrase) > 0
        assert len(s.relearn_train) + len(s.relearn_held) == len(s.forget)
        assert set(s.identity()) == {"name", *PARTS}


def test_no_fact_on_two_sides(splits):
    cal, sps = splits
    cal_facts = set(cal.facts["forget"]) | set(cal.facts["retain_same"])
    for s in [cal, *sps]:
        f = s.facts
        assert _facts(s.forget) == set(f["forget"])
        assert not set(f["forget"]) & set(f["retain_same"])
        assert not set(f["relearn_train"]) & set(f["relearn_held"])
        assert set(f["relearn_train"]) | set(f["relearn_held"]) == set(f["forget"])
        assert _facts(s.relearn_train) == set(f["relearn_train"]) and _facts(s.relearn_held) == set(f["relearn_held"])
        assert _facts(s.paraphrase) <= set(f["forget"])  # paraphrases of the targeted facts only
        assert not _facts(s.unknown) & set(f["relearn_train"])  # the floor is not taught by the attack
        if s is not cal:
            assert not cal_facts & (set(f["forget"]) | set(f["retain_same"]))


def test_no_reversed_or_duplicated_rows_across_halves(splits):
    _, sps = splits
    for s in sps:
        for a, b in itertools.product(s.relearn_train.items, s.relearn_held.items):
            assert a.prompt != b.prompt and not _reversed(a, b), (a, b)
        for a, b in itertools.product(s.forget.items, s.retain_same.items):
            assert a.prompt != b.prompt and not _reversed(a, b), (a, b)


def test_reversal_detector_sees_a_reversal():
    pool = builtin_pool()
    rows = {r["template"]: r for r in pool.rows if r["fact"] == "element:gold"}
    assert {"pool_symbol", "pool_element_of_symbol"} <= set(rows)
    t = load_task("builtin:chemistry_pool")
    items = {it.prompt: it for it in t.items}
    assert _reversed(items[rows["pool_symbol"]["prompt"]], items[rows["pool_element_of_symbol"]["prompt"]])


def test_deterministic_and_resampled(splits):
    cal, sps = splits
    cal2, sps2 = resample(n_splits=5, n_forget=64, n_retain=64, n_unknown=48, seed=0)
    assert [s.identity() for s in sps] == [s.identity() for s in sps2] and cal.identity() == cal2.identity()
    forget_sets = [frozenset(s.facts["forget"]) for s in sps]
    assert len(set(forget_sets)) == 5  # every split targets other facts
    assert resample(n_splits=1, seed=1)[1][0].facts["forget"] != sps[0].facts["forget"]


def test_pool_too_small_is_refused():
    with pytest.raises(CircuitForgeError, match="too few rows"):
        resample(n_splits=1, n_forget=400, n_retain=200)


def test_tiny_facts_pool():
    pool = pool_from_tasks("tiny", load_task("tiny-facts:forget"), load_task("tiny-facts:forget_paraphrase"))
    assert len({r["fact"] for r in pool.rows}) == 48 and not pool.unknown
    cal, sps = resample(n_splits=2, n_forget=16, n_retain=16, n_unknown=8, calibration_share=0.2, pool=pool)
    for s in sps:
        assert len(s.unknown) == 0 and not set(s.facts["forget"]) & set(s.facts["retain_same"])
        assert {r for r in s.facts["paraphrase"]} <= set(s.facts["forget"])


@pytest.mark.parametrize("model", ["gemma3-270m", "qwen2.5-0.5b"])
def test_per_model_pools_are_filtered_copies(model):
    """``builtin:MODEL`` pools (benchmarks/build_slices.py): rows of the shipped pool only, known and never-known
    rows kept apart, and resampled with the same hygiene as the SmolLM2 pool."""
    from circuitforge.data.task import BUILTIN_DIR

    d = BUILTIN_DIR / model
    if not (d / "chemistry_pool.jsonl").is_file():
        pytest.skip(f"{model}: pool not built (python benchmarks/build_slices.py --models {model})")
    full, pool = builtin_pool(), builtin_pool(d)
    assert pool.name == f"builtin:{model}/chemistry"
    for part in ("rows", "paraphrase", "unknown"):
        mine, shipped = getattr(pool, part), getattr(full, part)
        assert mine and {r["prompt"] for r in mine} <= {r["prompt"] for r in shipped}, part
    assert len(pool.rows) < len(full.rows)   # filtered, not copied
    assert not {r["prompt"] for r in pool.rows} & {r["prompt"] for r in pool.unknown}
    cal, sps = resample(2, 48, 48, 48, 0, 0.15, pool)
    for s in sps:
        assert len(s.forget) == 48 and len(s.retain_same) == 48 and len(s.unknown) > 0
        assert not set(s.facts["forget"]) & set(s.facts["retain_same"])
        assert not (set(cal.facts["forget"]) | set(cal.facts["retain_same"])) & set(s.facts["forget"])


def test_bench_refuses_a_missing_model_pool():
    from circuitforge.eval.bench import BenchConfig, make_splits

    with pytest.raises(CircuitForgeError, match="no nosuch-model/chemistry_pool.jsonl"):
        make_splits(BenchConfig(version=1, model="tiny-facts", pool="builtin:nosuch-model"))


def test_retain_train_is_held_apart_and_leaves_the_other_parts_unchanged(splits):
    """``n_retain_train`` adds same-domain rows a method may be given as retain rows: facts in no other part
    of the split (so ``retain_same`` stays a held-out measure), drawn after everything else, so every other
    part — and the identity the committed benchmark cells recorded — is the same as without it."""
    cal, sps = splits
    cal2, sps2 = resample(n_splits=5, n_forget=64, n_retain=64, n_unknown=48, seed=0, n_retain_train=48)
    for a, b in zip(sps, sps2, strict=True):
        assert len(a.retain_train) == 0 and "retain_train" not in a.identity()
        assert {k: v for k, v in b.identity().items() if k != "retain_train"} == a.identity()
        assert b.identity()["retain_train"]["n"] == len(b.retain_train) == 48
        assert _facts(b.retain_train) == set(b.facts["retain_train"])
        for part in ("forget", "retain_same", "relearn_train", "relearn_held", "paraphrase"):
            assert not set(b.facts["retain_train"]) & set(b.facts[part]), part
        for x, y in itertools.product(b.retain_train.items, [*b.forget.items, *b.retain_same.items]):
            assert x.prompt != y.prompt and not _reversed(x, y), (x, y)
    # the calibration split (the baselines' sweep) gets the same three kinds of rows, in thirds
    assert len(cal2.retain_train) > 0 and not set(cal2.facts["retain_train"]) & set(cal2.facts["forget"])
    with pytest.raises(CircuitForgeError, match="too few rows"):
        resample(n_splits=1, n_forget=128, n_retain=64, n_retain_train=200)
