"""The shipped benchmark against the model it was selected on (SmolLM2-135M)."""

import pytest

from circuitforge.data import evaluate, load_task

pytestmark = pytest.mark.slow


def test_forget_accuracy(smollm2):
    r = evaluate(smollm2, load_task("builtin:forget"))
    assert r.n >= 60
    assert r.accuracy >= 0.95


@pytest.mark.parametrize("name", ["forget", "forget_paraphrase", "retain"])
def test_clean_corrupt_aligned(smollm2, name):
    tok = smollm2.tokenizer
    for it in load_task(f"builtin:{name}").items:
        assert smollm2.to_tokens(it.prompt).shape == smollm2.to_tokens(it.corrupt_prompt).shape, it.prompt
        first = tok(it.answer, add_special_tokens=False)["input_ids"][0]
        cfirst = tok(it.corrupt_answer, add_special_tokens=False)["input_ids"][0]
        assert first != cfirst, it.prompt
