"""Task loading/validation and scoring against hand-computed values on the tiny trained model."""

import json

import pytest
import torch

from circuitforge.data import ChoiceItem, ClozeItem, Task, evaluate, load_task, task_from_rows
from circuitforge.data.scoring import choice_prompt, continuation_logprobs
from circuitforge.errors import CircuitForgeError

ROWS = [
    {"prompt": "the symbol of elem1 is", "answer": "sym5", "distractors": ["sym1", "sym2", "sym3"],
     "corrupt_prompt": "the symbol of elem2 is", "corrupt_answer": "sym7"},
    {"prompt": "the capital of land3 is", "answer": " city4"},
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_formats_give_the_same_task(tmp_path):
    pd = pytest.importorskip("pandas")  # pandas comes with datasets
    j = load_task(_write_jsonl(tmp_path / "t.jsonl", ROWS))
    assert j.kind == "cloze" and len(j) == 2
    assert j.items[0].answer == " sym5" and j.items[0].distractors == (" sym1", " sym2", " sym3")
    df = pd.DataFrame(ROWS)
    df.to_parquet(tmp_path / "t.parquet")
    assert load_task(tmp_path / "t.parquet").sha256 == j.sha256
    csv_rows = [dict(r, distractors=json.dumps(r.get("distractors", []))) for r in ROWS]
    pd.DataFrame(csv_rows).to_csv(tmp_path / "t.csv", index=False)
    c = load_task(tmp_path / "t.csv")
    assert [it.answer for it in c.items] == [it.answer for it in j.items]
    assert c.items[0].distractors == j.items[0].distractors


@pytest.mark.parametrize(
    "row, field",
    [
        ({"prompt": "a b", "answer": ""}, "answer"),
        ({"prompt": "a b"}, "answer"),
        ({"prompt": "a b", "answer": "x", "distractors": "not-a-list-["}, "distractors"),
        ({"prompt": "a b", "answer": "x", "distractors": [1, 2]}, "distractors"),
        ({"prompt": "a b", "answer": "x", "distractors": ["x"]}, "distractors"),
        ({"prompt": "a b", "answer": "x", "corrupt_answer": "y"}, "corrupt_prompt"),
    ],
)
def test_malformed_cloze_row_names_file_row_and_field(tmp_path, row, field):
    path = _write_jsonl(tmp_path / "bad.jsonl", [ROWS[1], row])
    with pytest.raises(CircuitForgeError) as e:
        load_task(path)
    msg = str(e.value)
    assert "bad.jsonl" in msg and "row 2" in msg and field in msg


def test_malformed_choice_rows_and_json(tmp_path):
    good = {"question": "q?", "choices": ["a", "b"], "answer": 1}
    for bad, field in (({"question": "q?", "choices": ["a", "b"], "answer": 2}, "answer"),
                       ({"question": "q?", "choices": ["a"], "answer": 0}, "choices"),
                       ({"question": "q?", "choices": ["a", "b"], "answer": "1"}, "answer")):
        with pytest.raises(CircuitForgeError, match=f"row 2, field '{field}'"):
            load_task(_write_jsonl(tmp_path / "mc.jsonl", [good, bad]))
    (tmp_path / "broken.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(CircuitForgeError, match="row 2 .*invalid JSON"):
        load_task(tmp_path / "broken.jsonl")
    with pytest.raises(CircuitForgeError, match="unknown format"):
        task_from_rows([{"text": "x"}], "t")
    with pytest.raises(CircuitForgeError, match="no such"):
        load_task(tmp_path / "absent.jsonl")
    with pytest.raises(CircuitForgeError, match="no such built-in"):
        load_task("builtin:absent")


def test_hub_dataset_offline_is_clear():
    with pytest.raises(CircuitForgeError, match="could not be loaded"):
        load_task("someone/not-a-dataset-here")


def _manual_logprob(h, context, cont):
    """Unbatched reference: one forward pass per (context, continuation)."""
    ctx = h.to_tokens(context)[0]
    cont_ids = torch.tensor(h.tokenizer(cont, add_special_tokens=False)["input_ids"])
    toks = torch.cat([ctx, cont_ids])[None]
    with torch.no_grad():
        logp = torch.log_softmax(h.logits(toks)[0], -1)
    return sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont_ids))


def test_cloze_scoring_matches_hand_computation(tiny_facts):
    task = load_task("tiny-facts:forget").head(6)
    # make row 0 wrong on purpose: swap in a distractor as the "answer"
    it0 = task.items[0]
    wrong = ClozeItem(it0.prompt, it0.distractors[0], (it0.answer, *it0.distractors[1:]))
    t = Task("t", "cloze", (wrong, *task.items[1:]))
    res = evaluate(tiny_facts, t, batch_size=4)
    for k, it in enumerate(t.items):
        lps = [_manual_logprob(tiny_facts, it.prompt, o) for o in (it.answer, *it.distractors)]
        assert res.answer_logprob[k] == pytest.approx(lps[0], abs=1e-4)
        assert res.correct[k] == all(lps[0] > x for x in lps[1:])
    assert res.correct[0] is False and res.accuracy == pytest.approx(5 / 6)


def test_cloze_without_distractors_is_greedy_first_token(tiny_facts):
    items = load_task("tiny-facts:retain").items[:4]
    rows = [ClozeItem(it.prompt, a) for it, a in zip(items, [items[0].answer, " city0", items[2].answer, items[3].answer], strict=True)]
    rows.append(ClozeItem("the capital of land2 is governed from", " city1"))   # a longer prompt: padded rows in one batch
    t = Task("t", "cloze", tuple(rows))
    res = evaluate(tiny_facts, t)
    for k, it in enumerate(t.items):
        with torch.no_grad():
            nxt = tiny_facts.logits(tiny_facts.to_tokens(it.prompt))[0, -1].argmax().item()
        assert res.correct[k] == (nxt == tiny_facts.tokenizer(it.answer, add_special_tokens=False)["input_ids"][0])
    assert res.correct[0] and res.n == 5


def test_multiple_choice_scoring_matches_hand_computation(tiny_facts):
    items = (ChoiceItem("the symbol of elem1 is", ("sym1", "sym2", "sym3"), 2),
             ChoiceItem("the capital of land2 is", ("city1", "city2"), 0))
    t = Task("mc", "choice", items)
    res = evaluate(tiny_facts, t)
    assert choice_prompt(items[0]) == "the symbol of elem1 is\nA. sym1\nB. sym2\nC. sym3\nAnswer:"
    for k, it in enumerate(items):
        lps = [_manual_logprob(tiny_facts, choice_prompt(it), f" {'ABC'[i]}") for i in range(len(it.choices))]
        assert res.answer_logprob[k] == pytest.approx(lps[it.answer], abs=1e-4)
        # ties count as wrong (strictly greater than every other choice)
        assert res.correct[k] == all(lps[it.answer] > x for j, x in enumerate(lps) if j != it.answer)


def test_batched_equals_unbatched(tiny_facts):
    pairs = [("the symbol of elem3 is", " sym4"), ("the capital of land1 is governed from", " city2 city3"), ("elem5", " is")]
    lp1, _ = continuation_logprobs(tiny_facts, pairs, batch_size=1)
    lp3, _ = continuation_logprobs(tiny_facts, pairs, batch_size=3)
    assert lp1 == pytest.approx(lp3, rel=5e-6, abs=1e-5)  # padding changes fp32 summation order only
    assert lp1 == pytest.approx([_manual_logprob(tiny_facts, c, x) for c, x in pairs], abs=1e-4)
    # a logits_fn runs the whole forward; without one only the read positions are unembedded: same numbers
    lpf, _ = continuation_logprobs(tiny_facts, pairs, batch_size=3, logits_fn=tiny_facts.logits)
    assert lpf == pytest.approx(lp3, rel=5e-6, abs=1e-5)


def test_single_token_options_of_one_prompt_share_a_forward(tiny_facts):
    ctx = "the symbol of elem3 is"
    opts = [" sym4", " sym1", " sym2"]
    assert all(len(tiny_facts.tokenizer(o, add_special_tokens=False)["input_ids"]) == 1 for o in opts)
    rows: list[int] = []

    def counted(toks):
        rows.append(toks.shape[0])
        return tiny_facts.logits(toks)

    lps, _ = continuation_logprobs(tiny_facts, [(ctx, o) for o in opts], logits_fn=counted)
    assert rows == [1]   # one sequence (the prompt) for the three options
    assert lps == pytest.approx([_manual_logprob(tiny_facts, ctx, o) for o in opts], abs=1e-4)


def test_task_helpers(forget_task):
    a, b = forget_task.halves()
    assert len(a) + len(b) == len(forget_task) and not set(a.items) & set(b.items)
    assert forget_task.head(5).sha256 != forget_task.sha256
    assert forget_task.identity()["n"] == 48


def _packing_pairs():
    """Two prompts, each with several multi-token options (so an option that could see another's tokens
    would change its log-prob), a single-token option, two options with the same input (a tie) and a
    one-option prompt."""
    a, b = "the symbol of elem3 is", "the capital of land1 is governed from"
    return [(a, " sym4 sym1"), (a, " sym2 sym2 sym3"), (a, " sym1"), (a, " sym4 sym1"), (a, " city2 sym4"),
            (b, " city2 city3"), (b, " city3"), (b, " sym1 city2 city1 sym2"), ("elem5", " is the")]


@pytest.mark.parametrize("spec", ["tiny-facts", "tiny-gpt2"])
def test_packed_options_score_as_their_own_sequences(spec, tiny_facts, tiny_gpt2):
    """Shared-prefix packing (one sequence per prompt, block mask, restarted positions) gives every option the
    log-prob of its own unpacked sequence (Llama: RoPE; GPT-2: learned positions), batched or not."""
    from circuitforge.data.scoring import pack_window

    h = {"tiny-facts": tiny_facts, "tiny-gpt2": tiny_gpt2}[spec]
    pairs = _packing_pairs()
    calls: list[tuple[int, bool]] = []
    orig = h.logits_at

    def spy(toks, at, *a, **k):
        calls.append((toks.shape[0], k.get("attention_mask") is not None))
        return orig(toks, at, *a, **k)

    h.logits_at = spy
    try:
        lp, greedy = continuation_logprobs(h, pairs)
        lp1, _ = continuation_logprobs(h, pairs, batch_size=1)
    finally:
        del h.logits_at
    assert pack_window(h, None) == float("inf")
    assert calls[0] == (3, True) and len(calls) == 4    # three prompts, three sequences, one pass; then 3 of 1
    want = [_manual_logprob(h, c, x) for c, x in pairs]
    assert lp == pytest.approx(want, abs=1e-4) and lp1 == pytest.approx(want, abs=1e-4)
    assert lp[0] == lp[3]                                  # same input: the same body, an exact tie
    assert len(greedy) == len(pairs)


def test_packing_falls_back_where_it_would_not_be_exact(tiny_gemma3, tiny_facts):
    """A sliding window (tiny Gemma 3: 4 tokens) cuts packed and unpacked sequences differently: groups longer
    than the window are scored unpacked; a logits_fn (a model run whole) is never packed."""
    from circuitforge.data.scoring import pack_window

    pairs = _packing_pairs()
    assert pack_window(tiny_gemma3, None) == 4.0 and pack_window(tiny_facts, tiny_facts.logits) is None
    lp, _ = continuation_logprobs(tiny_gemma3, pairs)
    assert lp == pytest.approx([_manual_logprob(tiny_gemma3, c, x) for c, x in pairs], abs=1e-4)
    lpf, _ = continuation_logprobs(tiny_facts, pairs, logits_fn=tiny_facts.logits)
    assert lpf == pytest.approx([_manual_logprob(tiny_facts, c, x) for c, x in pairs], abs=1e-4)
