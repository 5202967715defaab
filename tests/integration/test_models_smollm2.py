"""SmolLM2-135M: the embedded default loads from the cache, the GGUF route agrees, MC scoring runs."""

import time

import pytest
import torch

from circuitforge.data import ChoiceItem, Task, evaluate
from circuitforge.data.scoring import choice_prompt, continuation_logprobs
from circuitforge.models import load
from circuitforge.models.smollm2 import ensure_gguf

pytestmark = pytest.mark.slow


def test_architecture_and_cached_load(smollm2):
    assert smollm2.architecture() == {"family": "llama", "model_type": "llama", "n_layers": 30, "n_heads": 9, "n_kv_heads": 3,
                                      "d_head": 64, "d_model": 576, "d_mlp": 1536, "d_vocab": 49152}
    t0 = time.time()
    again = load("smollm2-135m")
    print(f"cached SmolLM2 load: {time.time() - t0:.2f} s")  # measured, reported in the closing note
    assert again.source_dir == smollm2.source_dir


def test_gguf_spec_matches_cached_checkpoint(smollm2):
    g = load(str(ensure_gguf()))
    toks = smollm2.to_tokens(["The capital of France is"])
    with torch.no_grad():
        assert torch.allclose(g.logits(toks), smollm2.logits(toks), atol=1e-4)
    assert g.sha256 == smollm2.sha256


def test_multiple_choice_on_smollm2(smollm2):
    items = (ChoiceItem("What is the capital of France?", ("Berlin", "Paris", "Rome", "Madrid"), 1),
             ChoiceItem("Which gas do plants absorb?", ("Oxygen", "Helium", "Carbon dioxide", "Neon"), 2))
    res = evaluate(smollm2, Task("mc", "choice", items))
    for k, it in enumerate(items):
        lps, _ = continuation_logprobs(smollm2, [(choice_prompt(it), f" {c}") for c in "ABCD"])
        assert res.correct[k] == all(lps[it.answer] > x for j, x in enumerate(lps) if j != it.answer)
        assert res.answer_logprob[k] == pytest.approx(lps[it.answer], abs=1e-4)
