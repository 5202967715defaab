"""The shipped benchmark (``builtin:*``): row format and split hygiene, no model needed."""

import json

import pytest

from circuitforge.data import load_task
from circuitforge.data.task import BUILTIN_DIR, builtin_names

SPLITS = ["forget", "forget_paraphrase", "retain", "retain_capitals", "retain_general"]
KEYS = {"prompt", "answer", "distractors", "corrupt_prompt", "corrupt_answer"}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (BUILTIN_DIR / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def test_splits_are_shipped():
    assert set(SPLITS) <= set(builtin_names())


@pytest.mark.parametrize("name", SPLITS)
def test_rows_valid(name):
    rows = _rows(name)
    assert len(rows) >= 60
    task = load_task(f"builtin:{name}")  # validates every row
    assert task.kind == "cloze" and len(task) == len(rows)
    for r in rows:
        assert set(r) == KEYS, r
        assert r["answer"].startswith(" ") and r["corrupt_answer"].startswith(" ")
        assert len(r["distractors"]) == 3 and len(set(r["distractors"])) == 3
        assert all(d.startswith(" ") and d.strip() for d in r["distractors"])
        assert r["answer"] not in r["distractors"]
        assert r["corrupt_prompt"] != r["prompt"] and r["corrupt_answer"] != r["answer"]
        # same template (only the subject differs): the prompts end in the same word
        assert r["prompt"].split()[-1] == r["corrupt_prompt"].split()[-1], r
    prompts = [r["prompt"] for r in rows]
    assert len(prompts) == len(set(prompts)), "duplicate prompts"


def test_paraphrase_disjoint_from_forget():
    forget = {r["prompt"] for r in _rows("forget")}
    para = {r["prompt"] for r in _rows("forget_paraphrase")}
    assert not forget & para


def test_retain_is_capitals_plus_general():
    retain = {r["prompt"] for r in _rows("retain")}
    parts = {r["prompt"] for n in ("retain_capitals", "retain_general") for r in _rows(n)}
    assert retain == parts
    forget = {r["prompt"] for n in ("forget", "forget_paraphrase") for r in _rows(n)}
    assert not retain & forget
