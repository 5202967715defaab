"""Gemma 3 270M and Qwen2.5-Coder-0.5B-Instruct: they load from the cache, complete known facts, their component
weight slices are the hook-level ablations, and EAP tracks exact patching on a few nodes.

Each model loads once per module (≈ 10 s each from the cache; the first use downloads and converts them:
≈ 75 s each, see docs/getting-started.md). Weight edits are undone in ``finally`` so the shared handles stay
pristine.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

from circuitforge.attribution import attribute
from circuitforge.data import task_from_rows
from circuitforge.models import ModelHandle, component_params, load
from circuitforge.models.weights import ParamSlice

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma() -> ModelHandle:
    return load("gemma3-270m")


@pytest.fixture(scope="module")
def qwen() -> ModelHandle:
    return load("qwen2.5-0.5b")


def greedy(h: ModelHandle, prompt: str, n: int = 1) -> str:
    toks = h.to_tokens([prompt])
    with torch.no_grad():
        for _ in range(n):
            toks = torch.cat([toks, h.logits(toks)[:, -1].argmax(-1, keepdim=True)], 1)
    return h.tokenizer.decode(toks[0, -n:])


@contextmanager
def zeroed(slices: list[ParamSlice]) -> Iterator[None]:
    saved = [s.view.clone() for s in slices]
    try:
        with torch.no_grad():
            for s in slices:
                s.view.zero_()
        yield
    finally:
        with torch.no_grad():
            for s, v in zip(slices, saved, strict=True):
                s.view.copy_(v)


def by_hook(h: ModelHandle, toks: torch.Tensor, hooks: list[str], index: tuple[slice | int, ...]) -> torch.Tensor:
    def fn(x: torch.Tensor, hook: object) -> torch.Tensor:
        x = x.clone()
        x[index] = 0.0
        return x

    with torch.no_grad(), h.bridge.hooks(fwd_hooks=[(n, fn) for n in hooks]):
        return h.logits(toks)


def check_slices_equal_hook_ablation(h: ModelHandle, layer: int, head: int, neuron: int) -> None:
    """Zeroing every slice of a head / KV head / neuron equals zeroing its activation at the hook."""
    toks = h.to_tokens(["The capital of Germany is the city of"])
    with torch.no_grad():
        base = h.logits(toks)
    tol = 1e-4 * float(base.abs().max())
    group = head // h.group_size
    all_pos = (slice(None), slice(None))
    cases = [
        (f"a{layer}.h{head}", [f"blocks.{layer}.attn.hook_z"], (*all_pos, head)),
        (f"a{layer}.kv{group}", [f"blocks.{layer}.attn.hook_k", f"blocks.{layer}.attn.hook_v"], (*all_pos, group)),
        (f"m{layer}.n{neuron}", [f"blocks.{layer}.mlp.hook_post"], (*all_pos, neuron)),
    ]
    for node, hooks, index in cases:
        want = by_hook(h, toks, hooks, index)
        with zeroed(component_params(h, node)), torch.no_grad():
            got = h.logits(toks)
        assert (want - base).abs().max() > 10 * tol, node  # the ablation does something
        torch.testing.assert_close(got, want, atol=tol, rtol=0, msg=node)
    with torch.no_grad():
        torch.testing.assert_close(h.logits(toks), base, atol=0, rtol=0)  # weights restored


def capitals(pairs: list[tuple[str, str]], template: str) -> list[dict[str, str]]:
    n = len(pairs)
    return [{"prompt": template.format(c), "answer": f" {a}", "corrupt_prompt": template.format(pairs[(i + 1) % n][0]),
             "corrupt_answer": f" {pairs[(i + 1) % n][1]}"} for i, (c, a) in enumerate(pairs)]


def eap_vs_exact(h: ModelHandle, rows: list[dict[str, str]], nodes: list[str]) -> float:
    task = task_from_rows(rows, "capitals")
    g = attribute(h, task, method="eap", level="node")
    x = attribute(h, task, method="exact", level="node", nodes=nodes)
    assert g.clean_metric > 1 and g.corrupt_metric < -1, (g.clean_metric, g.corrupt_metric)
    assert x.node_score("input") == pytest.approx(x.clean_metric - x.corrupt_metric, abs=1e-3)
    idx = torch.tensor([g.writers.index(v) for v in nodes])
    rho = float(spearmanr(g.node_scores[idx].numpy(), x.node_scores[idx].numpy())[0])
    print(f"{h.spec}: EAP vs exact patching on {len(nodes)} nodes, {len(rows)} prompts: Spearman {rho:.3f}")
    return rho


# -- Gemma 3 270M ---------------------------------------------------------------------------------------
def test_gemma3_architecture_config_and_licence(gemma):
    assert gemma.architecture() == {"family": "llama", "model_type": "gemma3_text", "n_layers": 18, "n_heads": 4,
                                    "n_kv_heads": 1, "d_head": 256, "d_model": 640, "d_mlp": 2048, "d_vocab": 262144}
    cfg = gemma.hf.config
    assert (cfg.query_pre_attn_scalar, cfg.sliding_window, cfg.tie_word_embeddings) == (256, 512, True)
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == [5, 11, 17]
    assert "lm_head.weight" not in gemma.named_parameters()  # tied: the embedding is the unembedding
    assert sum(p.numel() for p in gemma.named_parameters().values()) == 268_098_176
    assert gemma.source_dir is not None and (Path(gemma.source_dir) / "GEMMA_TERMS.html").is_file()


def test_gemma3_completes_known_facts(gemma):
    assert greedy(gemma, "The capital of Germany is the city of") == " Berlin"
    assert greedy(gemma, "The Eiffel Tower is located in the city of") == " Paris"


def test_gemma3_slices_equal_hook_ablation(gemma):
    check_slices_equal_hook_ablation(gemma, layer=12, head=2, neuron=7)


def test_gemma3_eap_tracks_exact_patching(gemma):
    pairs = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Japan", "Tokyo")]
    # 15 nodes x 4 prompts: one stacked forward pass of exact patching
    nodes = ["input"] + [f"m{L}" for L in range(0, 18, 3)] + [f"a{L}.h{k}" for L in (12, 15) for k in range(4)]
    rho = eap_vs_exact(gemma, capitals(pairs, "The capital of {} is the city of"), nodes)
    assert rho == rho and rho > 0  # finite and positive (measured: docs/getting-started.md)


# -- Qwen2.5-Coder-0.5B-Instruct ------------------------------------------------------------------------
def test_qwen2_architecture_and_untied_head(qwen):
    assert qwen.architecture() == {"family": "llama", "model_type": "qwen2", "n_layers": 24, "n_heads": 14,
                                   "n_kv_heads": 2, "d_head": 64, "d_model": 896, "d_mlp": 4864, "d_vocab": 151936}
    params = qwen.named_parameters()
    assert "lm_head.weight" in params and params["lm_head.weight"] is not params["model.embed_tokens.weight"]
    assert qwen.to_tokens("Paris")[0, 0] != qwen.tokenizer.bos_token_id  # no BOS: Qwen2 has none


def test_qwen2_completes_known_facts(qwen):
    assert greedy(qwen, "The capital of France is") == " Paris"
    assert greedy(qwen, "The Eiffel Tower is located in the city of") == " Paris"


def test_qwen2_slices_with_biases_equal_hook_ablation(qwen):
    names = [s.name.rsplit(".", 2)[-2:] for s in component_params(qwen, "a5.h9")]
    assert ["q_proj", "bias"] in names  # the head's own q-bias rows belong to the head
    kv = component_params(qwen, "a5.kv1")
    assert sorted(s.name.rsplit(".", 2)[-2] + "." + s.name.rsplit(".", 1)[-1] for s in kv) == [
        "k_proj.bias", "k_proj.weight", "v_proj.bias", "v_proj.weight"]
    check_slices_equal_hook_ablation(qwen, layer=5, head=9, neuron=11)


def test_qwen_layer_hybrids_resumed_equal_hooked(qwen: ModelHandle) -> None:
    """CAD's fast hybrid path (Qwen2's decoder layers ≥ L run alone) equals the hooked full-depth path."""
    from circuitforge.cad.hybrids import hybrid_margins, resumable
    from circuitforge.models import clone

    task = task_from_rows([{"prompt": "The capital of France is", "answer": " Paris", "distractors": [" Rome", " Berlin"]},
                           {"prompt": "The capital of Japan is", "answer": " Tokyo", "distractors": [" Seoul", " Paris"]}],
                          name="capitals")
    edited = clone(qwen)
    with torch.no_grad():
        edited.hf.model.layers[3].mlp.down_proj.weight.mul_(0.5)
    assert resumable(qwen)
    # parts=None: compute every hybrid (the edit sits in block 3, so by default the cuts at 12 and 24 would be
    # copied from M₁ and the one at 0 from M₀, and neither path would run)
    fast = hybrid_margins(qwen, edited, task, layers=[0, 12, 24], parts=None)
    hooked = hybrid_margins(qwen, edited, task, layers=[0, 12, 24], resume=False, parts=None)
    torch.testing.assert_close(fast.hybrid, hooked.hybrid, atol=2e-3, rtol=1e-3)
    assert (fast.hybrid[0] - fast.hybrid[1]).abs().max() > 1e-3   # the hybrids differ: the edit sits at layer 3


def _packed_vs_unpacked(h: ModelHandle, task_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared-prefix packed scoring (the default) against one sequence per option, on the model's own forget
    rows (multi-token options included): the same log-probs up to float summation order, the same verdicts."""
    import circuitforge.data.scoring as scoring
    from circuitforge.data import evaluate, load_task

    t = load_task(task_name).head(32)
    multi = sum(len(h.tokenizer(o, add_special_tokens=False)["input_ids"]) > 1
                for it in t.items for o in (it.answer, *it.distractors))
    assert multi >= 8 and scoring.pack_window(h, None) is not None
    packed = evaluate(h, t)
    monkeypatch.setattr(scoring, "pack_window", lambda *a: None)
    plain = evaluate(h, t)
    assert packed.correct == plain.correct
    assert packed.answer_logprob == pytest.approx(plain.answer_logprob, abs=2e-4)


def test_gemma3_packed_scoring_equals_unpacked(gemma: ModelHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    _packed_vs_unpacked(gemma, "builtin:gemma3-270m/forget", monkeypatch)


def test_qwen2_packed_scoring_equals_unpacked(qwen: ModelHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    _packed_vs_unpacked(qwen, "builtin:qwen2.5-0.5b/forget", monkeypatch)


def test_smollm2_packed_scoring_equals_unpacked(monkeypatch: pytest.MonkeyPatch) -> None:
    _packed_vs_unpacked(load("smollm2-135m"), "builtin:forget", monkeypatch)
