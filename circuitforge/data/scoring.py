"""Batched, padded scoring of tasks.

* cloze with distractors: correct when the answer's summed log-prob beats every distractor's (an option
  that encodes to the answer's own tokens is a tie, so wrong);
* cloze without distractors: greedy first-token match (argmax at the prompt's last position equals the
  answer's first token);
* multiple choice: lm-evaluation-harness style (WMDP template): the prompt is
  ``"{question}\\nA. {c0}\\nB. {c1}...\\nAnswer:"`` and each choice is scored by the log-likelihood of
  ``" A"``, ``" B"``...; the highest wins.

The options of one prompt run as one packed sequence (the prompt once, then each option's input under a
block mask with positions restarted at the prompt's length: :mod:`circuitforge.data.packing`), which gives
each option the log-prob of its own sequence with fewer tokens. Sequences are right-padded; a position never
attends to the padding, so the log-probs are exact up to float summation order (checked against one
unbatched forward per option in the tests). :data:`BATCH` sequences a pass.
"""

import string
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from circuitforge.data.packing import PACKED_MODEL_TYPES, pack, packed_batch, packed_reads, pad_reads
from circuitforge.data.task import ChoiceItem, ClozeItem, Task
from circuitforge.models.handle import ModelHandle

BATCH = 32
"""Sequences per forward pass. A pass over few tokens is bound by reading the weights (SmolLM2: ≈ 0.19 s for
one 4-token row on 2 CPU cores), so fewer, larger passes are faster: scoring SmolLM2's built-in forget +
retain rows took 1.14× (1.35× in an earlier run) as long at 16, 1.64× at 8, 0.87× at 64
(``python benchmarks/eval_batch.py``, unpacked); every row's verdict was the same at each size (log-probs within
1.3e-5). Packed (a sequence holds a prompt and all its options), 32 is still the fastest of 16 / 32 / 64 (0.57,
0.49, 0.56 × the unpacked time, ``python benchmarks/eval_packing.py``)."""

LogitsFn = Callable[[Int[torch.Tensor, "batch pos"]], Float[torch.Tensor, "batch pos vocab"]]


@dataclass(frozen=True)
class EvalResult:
    """Per-task scores. ``answer_logprob`` is the summed log-prob of the correct continuation (nats)."""

    accuracy: float
    mean_answer_logprob: float
    n: int
    correct: tuple[bool, ...]
    answer_logprob: tuple[float, ...]

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "mean_answer_logprob": self.mean_answer_logprob, "n": self.n}


def choice_prompt(item: ChoiceItem) -> str:
    letters = string.ascii_uppercase
    body = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(item.choices))
    return f"{item.question.strip()}\n{body}\nAnswer:"


def encode(handle: ModelHandle, context: str, continuation: str) -> tuple[list[int], int]:
    """Token ids of ``context`` (with BOS) + ``continuation`` (no special tokens) and the context length."""
    ctx = handle.to_tokens(context)[0].tolist()
    cont = handle.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return ctx + list(cont), len(ctx)


def pad_batch(seqs: list[list[int]], pad_id: int = 0) -> Int[torch.Tensor, "batch pos"]:
    """Right-pad token lists to one tensor."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


@torch.no_grad()
def continuation_logprobs(
    handle: ModelHandle,
    pairs: list[tuple[str, str]],
    batch_size: int = BATCH,
    logits_fn: LogitsFn | None = None,
) -> tuple[list[float], list[bool]]:
    """Summed log-prob of each continuation given its context, and whether it is the greedy choice at
    every one of its tokens. ``logits_fn`` overrides the forward pass (e.g. a quantized model).

    A continuation's log-probs are read from the forward of ``context + continuation[:-1]`` (the last token
    is predicted, never read). The pairs of one context are packed into one sequence, the context once and
    each option's input after it under a block mask (:mod:`circuitforge.data.packing`; the same log-probs,
    half the tokens on SmolLM2's built-in rows): a 4-option cloze row costs one sequence, and two options
    with the same input get bitwise-equal log-probs (a tie, never float noise). Without packing (a
    ``logits_fn``, an untested architecture, a group longer than a sliding window) pairs with the same
    input share one unpacked sequence. ``batch_size``: sequences a forward pass."""
    enc = [encode(handle, c, x) for c, x in pairs]
    lps, greedy = [0.0] * len(enc), [False] * len(enc)
    window = pack_window(handle, logits_fn)
    rest = list(range(len(enc)))
    if window is not None:
        by_ctx: dict[tuple[int, ...], list[int]] = {}
        for i, (ids, n_ctx) in enumerate(enc):
            by_ctx.setdefault(tuple(ids[:n_ctx]), []).append(i)
        packed = [pack(enc, m) for m in by_ctx.values()]
        fits = sorted((p for p in packed if len(p.tokens) <= window), key=lambda p: len(p.tokens))
        rest = sorted(i for p in packed if len(p.tokens) > window for i in p.reads)
        for start in range(0, len(fits), batch_size):
            chunk = fits[start : start + batch_size]
            toks, positions, mask = packed_batch(chunk)
            at, first = packed_reads(chunk)
            logp = torch.log_softmax(
                handle.logits_at(toks, at, attention_mask=mask, position_ids=positions).float(), dim=-1
            ).cpu()
            for row, p in enumerate(chunk):
                for i, rd in p.reads.items():
                    lps[i], greedy[i] = _score(logp[row, [r - first[row] for r in rd]], enc[i])
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in rest:
        groups.setdefault(tuple(enc[i][0][:-1]), []).append(i)
    inputs = sorted(groups, key=len)  # batch similar lengths together
    for start in range(0, len(inputs), batch_size):
        chunk_in = inputs[start : start + batch_size]
        toks = pad_batch([list(x) for x in chunk_in])
        # the positions that predict each continuation token: row j reads positions at[j, :n_j]
        need = [list(range(enc[groups[x][0]][1] - 1, len(x))) for x in chunk_in]
        logp = torch.log_softmax(_logits_at(handle, toks, pad_reads(need), logits_fn).float(), dim=-1).cpu()
        for row, x in enumerate(chunk_in):
            for i in groups[x]:
                lps[i], greedy[i] = _score(logp[row, : len(enc[i][0]) - enc[i][1]], enc[i])
    return lps, greedy


def pack_window(handle: ModelHandle, logits_fn: LogitsFn | None) -> float | None:
    """The longest packed sequence :func:`continuation_logprobs` may run on ``handle`` (the sliding window,
    or unbounded), or ``None`` when it scores unpacked (a ``logits_fn``, an architecture not in
    :data:`~circuitforge.data.packing.PACKED_MODEL_TYPES`)."""
    if logits_fn is not None or handle.model_type not in PACKED_MODEL_TYPES:
        return None
    cfg = handle.hf.config
    sliding = "sliding_attention" in (getattr(cfg, "layer_types", None) or ()) or getattr(cfg, "use_sliding_window", False)
    return float(cfg.sliding_window) if sliding and getattr(cfg, "sliding_window", None) else float("inf")


def _score(pred: Float[torch.Tensor, "k vocab"], enc: tuple[list[int], int]) -> tuple[float, bool]:
    """Summed log-prob of the continuation ``enc[0][enc[1]:]`` under the log-prob rows ``pred`` (one per
    continuation token), and whether it is the argmax at every token."""
    ids, n_ctx = enc
    tgt = torch.tensor(ids[n_ctx:])
    return pred.gather(1, tgt[:, None]).sum().item(), bool((pred.argmax(-1) == tgt).all())


def _logits_at(handle: ModelHandle, toks: Int[torch.Tensor, "batch pos"], at: Int[torch.Tensor, "batch k"],
               logits_fn: LogitsFn | None) -> Float[torch.Tensor, "batch k vocab"]:
    """Logits at positions ``at[j]`` of row ``j``: :meth:`ModelHandle.logits_at` (only those positions
    unembedded), or a ``logits_fn`` (e.g. a quantized model) run whole and read there."""
    if logits_fn is None:
        return handle.logits_at(toks, at)
    rows = torch.arange(toks.shape[0], device=handle.device)[:, None]
    return logits_fn(toks.to(handle.device))[rows, at.to(handle.device)]


def evaluate(handle: ModelHandle, task: Task, batch_size: int = BATCH, logits_fn: LogitsFn | None = None) -> EvalResult:
    """Score ``task`` on ``handle`` (see module docstring for the rules). Batched and padded."""
    pairs: list[tuple[str, str]] = []
    spans: list[tuple[int, int, int]] = []  # (start, count, index of correct option)
    for it in task.items:
        if isinstance(it, ClozeItem):
            opts = [it.answer, *it.distractors]
            spans.append((len(pairs), len(opts), 0))
            pairs += [(it.prompt, o) for o in opts]
        else:
            ctx = choice_prompt(it)
            spans.append((len(pairs), len(it.choices), it.answer))
            pairs += [(ctx, f" {string.ascii_uppercase[i]}") for i in range(len(it.choices))]
    lps, _ = continuation_logprobs(handle, pairs, batch_size, logits_fn)
    correct, ans_lp = [], []
    first_tok: list[bool] = []
    if task.kind == "cloze" and any(not it.distractors for it in task.items):  # type: ignore[union-attr]
        first_tok = _first_token_match(handle, task, batch_size, logits_fn)
    for k, (s, n, a) in enumerate(spans):
        scores = lps[s : s + n]
        it = task.items[k]
        if isinstance(it, ClozeItem) and not it.distractors:
            ok = first_tok[k]
        else:  # options with the answer's own tokens share its forward (continuation_logprobs): an exact tie
            ok = all(scores[a] > scores[j] for j in range(n) if j != a)
        correct.append(bool(ok))
        ans_lp.append(scores[a])
    n = len(correct)
    return EvalResult(sum(correct) / n, sum(ans_lp) / n, n, tuple(correct), tuple(ans_lp))


@torch.no_grad()
def _first_token_match(handle: ModelHandle, task: Task, batch_size: int, logits_fn: LogitsFn | None) -> list[bool]:
    out = []
    items = task.items
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ctx = [handle.to_tokens(it.prompt)[0].tolist() for it in chunk]  # type: ignore[union-attr]
        toks = pad_batch(ctx)
        # only each prompt's last position is unembedded (unless logits_fn runs the model whole)
        last = _logits_at(handle, toks, torch.tensor([[len(c) - 1] for c in ctx]), logits_fn)[:, 0]
        for j, it in enumerate(chunk):
            first = handle.tokenizer(it.answer, add_special_tokens=False)["input_ids"][0]  # type: ignore[union-attr]
            out.append(int(last[j].argmax()) == first)
    return out
