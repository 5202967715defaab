"""Shared unlearning objectives on cloze / multiple-choice rows, and the batching they need.

Every task row becomes one or more token sequences ``context + continuation`` (the correct answer, and
optionally each distractor): cloze rows use ``prompt`` + ``answer``; multiple-choice rows use the WMDP
template (:func:`circuitforge.data.scoring.choice_prompt`) + ``" A"``/``" B"``... Sequences are
right-padded; position ``t`` of ``targets`` is True when the model's prediction at ``t`` (of token
``t+1``) belongs to the continuation.

Sign conventions (all losses are *minimised*):

* :func:`answer_nll` — mean negative log-likelihood per continuation token (≥ 0). Gradient *descent* on
  it learns the answers; unlearning methods *ascend* it (GA minimises ``-answer_nll``).
* :func:`npo_loss` — Negative Preference Optimization (Zhang, Lin, Bai, Mei 2024, "Negative Preference
  Optimization: From Catastrophic Collapse to Effective Unlearning"):
  ``L = -(2/β) · mean log σ(-β · (log π_θ(y|x) − log π_ref(y|x)))``, ≥ 0, equal to ``(2/β)·log 2`` at
  ``θ = ref``; its gradient is GA's, weighted per row by ``2·σ(β·r)`` (r the log-ratio), so rows that are
  already forgotten stop contributing.
* :func:`kl_to_reference` — ``KL(π_ref ‖ π_θ)`` per non-pad position, averaged (≥ 0).
* :func:`margin_loss` — the push-away loss: ``softplus(lp(answer) − max_j lp(distractor_j) + margin)``
  averaged over rows (summed continuation log-probs). Minimising it pushes each answer below its best
  distractor, which is exactly what cloze accuracy measures; rows already pushed past the margin stop
  contributing.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from circuitforge.data import ClozeItem, Task
from circuitforge.data.packing import pack, packed_batch, packed_reads, pad_reads
from circuitforge.data.scoring import choice_prompt, encode, pack_window, pad_batch
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle


@dataclass(frozen=True)
class AnswerBatch:
    """Token sequences for some task rows.

    Attributes:
        tokens: ``[seq, pos]`` right-padded ids (pad id 0; never read, see ``valid``).
        targets: ``[seq, pos]`` True where the prediction at ``pos`` (of ``tokens[:, pos+1]``) is part
            of the continuation.
        valid: ``[seq, pos]`` True on non-pad tokens.
        row: ``[seq]`` index of the task row each sequence belongs to (0-based within the batch rows).
        option: ``[seq]`` 0 for the correct continuation, ``k ≥ 1`` for the k-th distractor.
    """

    tokens: Int[torch.Tensor, "seq pos"]
    targets: Bool[torch.Tensor, "seq pos"]
    valid: Bool[torch.Tensor, "seq pos"]
    row: Int[torch.Tensor, " seq"]
    option: Int[torch.Tensor, " seq"]

    @property
    def n_rows(self) -> int:
        return int(self.row.max()) + 1 if self.row.numel() else 0


def _pairs(item: object, options: bool) -> list[tuple[str, str]]:
    if isinstance(item, ClozeItem):
        conts = [item.answer, *(item.distractors if options else ())]
        return [(item.prompt, c) for c in conts]
    import string

    ctx = choice_prompt(item)  # type: ignore[arg-type]
    letters = [f" {string.ascii_uppercase[i]}" for i in range(len(item.choices))]  # type: ignore[attr-defined]
    ans = letters[item.answer]  # type: ignore[attr-defined]
    others = [x for i, x in enumerate(letters) if i != item.answer] if options else []  # type: ignore[attr-defined]
    return [(ctx, ans), *((ctx, o) for o in others)]


def answer_batch(handle: ModelHandle, task: Task, rows: list[int] | None = None, options: bool = False) -> AnswerBatch:
    """Encode ``task`` rows (all by default) as an :class:`AnswerBatch`; ``options=True`` adds one
    sequence per distractor (multiple choice: per wrong letter)."""
    idx = list(range(len(task))) if rows is None else list(rows)
    seqs: list[list[int]] = []
    ctx_len: list[int] = []
    row_of: list[int] = []
    opt_of: list[int] = []
    for r, i in enumerate(idx):
        for k, (ctx, cont) in enumerate(_pairs(task.items[i], options)):
            ids, n_ctx = encode(handle, ctx, cont)
            if len(ids) == n_ctx:
                raise CircuitForgeError(f"{task.name}, row {i + 1}: continuation {cont!r} encodes to no tokens")
            seqs.append(ids)
            ctx_len.append(n_ctx)
            row_of.append(r)
            opt_of.append(k)
    tokens = pad_batch(seqs)
    pos = torch.arange(tokens.shape[1])[None, :]
    lens = torch.tensor([len(s) for s in seqs])[:, None]
    n_ctx_t = torch.tensor(ctx_len)[:, None]
    targets = (pos >= n_ctx_t - 1) & (pos < lens - 1)
    return AnswerBatch(tokens, targets, pos < lens, torch.tensor(row_of), torch.tensor(opt_of))


def sequence_logprob(
    logits: Float[torch.Tensor, "seq pos vocab"], batch: AnswerBatch
) -> Float[torch.Tensor, " seq"]:
    """Summed log-prob of each sequence's continuation (nats, ≤ 0)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nxt = batch.tokens[:, 1:].to(logits.device)
    tok = logp.gather(-1, nxt[..., None])[..., 0]
    return (tok * batch.targets[:, :-1].to(logits.device)).sum(-1)


def answer_nll(logits: Float[torch.Tensor, "seq pos vocab"], batch: AnswerBatch) -> Float[torch.Tensor, ""]:
    """Mean NLL per continuation token over the batch (nats, ≥ 0)."""
    n_tok = batch.targets[:, :-1].sum().clamp(min=1)
    return -sequence_logprob(logits, batch).sum() / n_tok


def _continuation_logprobs_at(handle: ModelHandle, batch: AnswerBatch) -> tuple[
        Float[torch.Tensor, "seq k"], Bool[torch.Tensor, "seq k"]]:
    """Log-prob of each continuation token of each sequence, ``k`` = the most continuation tokens of any
    sequence (``keep`` marks the real ones), from a forward pass that unembeds only the positions
    predicting them (:meth:`ModelHandle.logits_at`)."""
    tgt = batch.targets[:, :-1]
    need = [torch.nonzero(row).flatten().tolist() for row in tgt]
    width = max(len(n) for n in need)
    at = pad_reads(need)
    logp = torch.log_softmax(handle.logits_at(batch.tokens.to(handle.device), at).float(), dim=-1)
    nxt = batch.tokens.gather(1, at + 1).to(logp.device)
    keep = torch.tensor([[j < len(n) for j in range(width)] for n in need], device=logp.device)
    return logp.gather(-1, nxt[..., None])[..., 0], keep


def answer_nll_at(handle: ModelHandle, batch: AnswerBatch) -> Float[torch.Tensor, ""]:
    """:func:`answer_nll` of ``batch`` with only the positions that predict
    continuation tokens unembedded (:meth:`ModelHandle.logits_at`): the same value, without the
    vocabulary-wide unembedding and its backward at every prompt position. Measured side by side
    (``benchmarks/relearn_step.py``, 16 forget rows): on Gemma 3 (262k-token vocabulary) forward 1.9× and
    backward 1.25× faster; on SmolLM2 (49k) no gain (forward 1.15×, backward 0.94×). Used by the relearning
    attack and CAD's benign fine-tune."""
    tok, keep = _continuation_logprobs_at(handle, batch)
    return -(tok * keep).sum() / keep.sum().clamp(min=1)


def sequence_logprob_at(handle: ModelHandle, batch: AnswerBatch, packed: bool = True) -> Float[torch.Tensor, " seq"]:
    """:func:`sequence_logprob` of ``batch`` with only the continuation positions unembedded. MANSU's forget
    gradient scores every option of every row (4 sequences a row): on Qwen2.5-0.5B (152k-token vocabulary)
    its full ``[64, positions, vocab]`` logits, their float copy, log-softmax and gradients put the run over
    24 GB (killed by the kernel's OOM killer in the benchmark).

    ``packed`` (default): the sequences of one row (its answer and distractors, which share the row's
    context) run as one packed sequence, the context once and each option's input after it under a block
    mask (:mod:`circuitforge.data.packing`) — the same values and gradients up to float summation order, and
    on SmolLM2's forget rows 0.4× the tokens. Unpacked where packing is not exact (an architecture not in
    :data:`~circuitforge.data.packing.PACKED_MODEL_TYPES`, a packed row longer than a sliding window) and
    whenever ``packed=False`` (MANSU's subject-position gradients, whose position masks are laid out on the
    unpacked sequences)."""
    if packed:
        out = _packed_sequence_logprob_at(handle, batch)
        if out is not None:
            return out
    tok, keep = _continuation_logprobs_at(handle, batch)
    return (tok * keep).sum(-1)


def _packed_sequence_logprob_at(handle: ModelHandle, batch: AnswerBatch) -> Float[torch.Tensor, " seq"] | None:
    """:func:`sequence_logprob_at` with every row's sequences packed into one, or ``None`` where packing is
    not exact on ``handle`` (see there)."""
    window = pack_window(handle, None)
    n = batch.tokens.shape[0]
    if window is None or n == 0 or n == batch.n_rows:   # one sequence a row: nothing to share
        return None
    lens = batch.valid.sum(1).tolist()
    n_ctx = (batch.targets.int().argmax(1) + 1).tolist()   # the first continuation token is predicted at n_ctx - 1
    enc = [(batch.tokens[i, : lens[i]].tolist(), n_ctx[i]) for i in range(n)]
    members: dict[int, list[int]] = {}
    for i, r in enumerate(batch.row.tolist()):
        members.setdefault(r, []).append(i)
    packs = [pack(enc, m) for m in members.values()]
    if max(len(p.tokens) for p in packs) > window:
        return None
    toks, positions, mask = packed_batch(packs)
    at, first = packed_reads(packs)
    j_idx, c_idx, tgt, seq = [], [], [], []
    for j, p in enumerate(packs):
        for i, rd in p.reads.items():
            ids, nc = enc[i]
            for t, r in enumerate(rd):
                j_idx.append(j)
                c_idx.append(r - first[j])
                tgt.append(ids[nc + t])
                seq.append(i)
    logp = torch.log_softmax(
        handle.logits_at(toks, at, attention_mask=mask, position_ids=positions).float(), dim=-1)
    dev = logp.device
    tok = logp[torch.tensor(j_idx, device=dev), torch.tensor(c_idx, device=dev), torch.tensor(tgt, device=dev)]
    return torch.zeros(n, device=dev, dtype=tok.dtype).index_add(0, torch.tensor(seq, device=dev), tok)


def npo_loss(
    logp: Float[torch.Tensor, " seq"], ref_logp: Float[torch.Tensor, " seq"], beta: float
) -> Float[torch.Tensor, ""]:
    """NPO loss ``-(2/β) mean log σ(-β (logp − ref_logp))`` (Zhang et al. 2024; see module docstring)."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp.to(logp.device))).mean()


def kl_to_reference(
    logits: Float[torch.Tensor, "seq pos vocab"], ref_logits: Float[torch.Tensor, "seq pos vocab"],
    valid: Bool[torch.Tensor, "seq pos"],
) -> Float[torch.Tensor, ""]:
    """``KL(π_ref ‖ π_θ)`` averaged over non-pad positions (nats, ≥ 0)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    lr = torch.log_softmax(ref_logits.float().to(lp.device), dim=-1)
    kl = (lr.exp() * (lr - lp)).sum(-1)
    m = valid.to(lp.device)
    return (kl * m).sum() / m.sum().clamp(min=1)


def margin_loss(
    logp: Float[torch.Tensor, " seq"], batch: AnswerBatch, margin: float = 1.0
) -> Float[torch.Tensor, ""]:
    """Push-away loss ``mean_rows softplus(lp(answer) − max_j lp(distractor_j) + margin)`` (see module
    docstring). Needs an :class:`AnswerBatch` built with ``options=True`` and every row to have a distractor."""
    n = batch.n_rows
    row, opt = batch.row.to(logp.device), batch.option.to(logp.device)
    ans = torch.full((n,), float("nan"), device=logp.device, dtype=logp.dtype).scatter(0, row[opt == 0], logp[opt == 0])
    neg = torch.full((n,), float("-inf"), device=logp.device, dtype=logp.dtype)
    neg = neg.scatter_reduce(0, row[opt > 0], logp[opt > 0], reduce="amax")
    if torch.isinf(neg).any():
        raise CircuitForgeError("margin loss needs at least one distractor per row (use the npo or ga objective)")
    return F.softplus(ans - neg + margin).mean()


def row_chunks(n: int, size: int) -> Iterator[list[int]]:
    """Consecutive row-index chunks ``[0..size), [size..2size)...``."""
    for s in range(0, n, size):
        yield list(range(s, min(n, s + size)))


def shuffled_batches(n: int, size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """An endless stream of row-index batches: a fresh seeded permutation per epoch."""
    if n == 0:
        raise CircuitForgeError("empty task")
    while True:
        perm = torch.randperm(n, generator=generator).tolist()
        for s in range(0, n, size):
            yield perm[s : s + size]


@torch.no_grad()
def reference_logprob(handle: ModelHandle, task: Task, chunk: int = 16) -> Float[torch.Tensor, " rows"]:
    """``log π(answer | prompt)`` of every row under ``handle`` (the frozen reference), no grad."""
    out = []
    for rows in row_chunks(len(task), chunk):
        b = answer_batch(handle, task, rows)
        out.append(sequence_logprob(handle.logits(b.tokens.to(handle.device)), b).cpu())
    return torch.cat(out)


@torch.no_grad()
def mean_answer_nll(handle: ModelHandle, task: Task, chunk: int = 16) -> float:
    """Mean NLL per answer token over the whole task (nats), no grad (only the positions that predict
    answer tokens are unembedded)."""
    tot, n_tok = 0.0, 0
    for rows in row_chunks(len(task), chunk):
        b = answer_batch(handle, task, rows)
        tot += float(-sequence_logprob_at(handle, b, packed=False).sum())
        n_tok += int(b.targets[:, :-1].sum())
    return tot / max(n_tok, 1)
