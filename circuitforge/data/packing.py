"""Scoring the options of one prompt in one packed sequence (shared-prefix packing).

A cloze row with distractors, scored one sequence per option, repeats its prompt in every sequence: on
SmolLM2's built-in forget + retain rows 7,688 tokens, of which the options' own tokens are a minority.
Packed, a row is one sequence ``prompt + option₁[:-1] + option₂[:-1] + …`` (only the tokens that are *read*
need an input: an option's last token is predicted, never fed), with

* a block attention mask: every token attends causally to the prompt and to the earlier tokens of its own
  option, never to another option's tokens;
* position ids that restart every option at the prompt's length, so each option token sits at the same
  position (RoPE angle, learned position embedding) as in its own unpacked sequence.

Each option token then sees exactly the keys, values and positions it sees unpacked, so its log-prob is the
same up to float summation order (checked against the unpacked path on every tested architecture: tiny
GPT-2, Llama, Gemma 3, and SmolLM2, Gemma 3 270M, Qwen2.5-0.5B). The first token of every option is read
at the prompt's last position, as before. On SmolLM2's built-in rows packing halves the tokens a scoring
pass runs (7,688 → 3,746, ``python benchmarks/eval_packing.py``).

Packing is used only where it is exact:

* architectures whose bridge takes a 4-D attention mask and ``position_ids`` as given, tested here
  (:data:`PACKED_MODEL_TYPES`); anything else is scored unpacked;
* sliding-window attention (Gemma 3's local layers) is not expressed in one mask shared by every layer, so
  a packed sequence is used only when it is no longer than the window (then no window cuts anything, packed
  or not); longer groups are scored unpacked. Gemma 3 270M's window is 512 tokens.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int

PACKED_MODEL_TYPES = frozenset({"llama", "qwen2", "gemma3_text", "gpt2"})
"""HF ``model_type`` values whose packed scoring is tested equal to unpacked scoring."""


@dataclass(frozen=True)
class Packed:
    """One packed sequence: ``tokens`` with their ``positions`` and ``segment`` (0 = the shared prompt,
    k ≥ 1 = the k-th option body); ``reads[i]`` = the indices into ``tokens`` whose next-token
    distributions score pair ``i``'s continuation tokens, in order."""

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    segment: tuple[int, ...]
    reads: dict[int, list[int]]


def pack(enc: list[tuple[list[int], int]], members: list[int]) -> Packed:
    """Pack the pairs ``members`` of ``enc`` (``(ids, n_ctx)`` each, all with the same context tokens) into
    one sequence. Options whose inputs (``ids[n_ctx:-1]``) are equal share one body, so their log-probs are
    bitwise equal (an exact tie, as unpacked)."""
    ids0, n = enc[members[0]]
    toks, pos, seg = list(ids0[:n]), list(range(n)), [0] * n
    start: dict[tuple[int, ...], int] = {}
    reads: dict[int, list[int]] = {}
    for i in members:
        ids, n_i = enc[i]
        if n_i != n or ids[:n] != ids0[:n]:
            raise ValueError("pack: the pairs do not share their context tokens")
        body = tuple(ids[n:-1])
        if body and body not in start:
            start[body] = len(toks)
            toks += body
            pos += range(n, n + len(body))
            seg += [len(start)] * len(body)
        reads[i] = [n - 1] + (list(range(start[body], start[body] + len(body))) if body else [])
    return Packed(tuple(toks), tuple(pos), tuple(seg), reads)


def packed_batch(rows: list[Packed], pad_id: int = 0) -> tuple[
        Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"], Bool[torch.Tensor, "batch 1 pos pos"]]:
    """Right-padded ``tokens``, ``position_ids`` and the boolean attention mask (True = may attend) of
    packed rows. A real query attends to key ``k`` when ``k`` is not after it, is not padding, and is in the
    prompt or in its own option; a padding query attends to the real keys before it (never read; it only
    keeps its softmax finite)."""
    width = max(len(r.tokens) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)   # -1: padding
    for j, r in enumerate(rows):
        n = len(r.tokens)
        tokens[j, :n] = torch.tensor(r.tokens)
        positions[j, :n] = torch.tensor(r.positions)
        seg[j, :n] = torch.tensor(r.segment)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    q, k = seg[:, :, None], seg[:, None, :]
    real_k = k >= 0
    same_or_prompt = (k == 0) | (k == q)
    allowed = causal[None] & real_k & torch.where(q >= 0, same_or_prompt, torch.ones_like(same_or_prompt))
    return tokens, positions, allowed[:, None]


def pad_reads(need: list[list[int]]) -> Int[torch.Tensor, "batch k"]:
    """Per-row read positions as one ``[batch, k]`` tensor, each row right-padded by repeating its last read
    (a duplicate read is never scored)."""
    width = max(len(n) for n in need)
    return torch.tensor([n + [n[-1]] * (width - len(n)) for n in need])


def packed_reads(rows: list[Packed]) -> tuple[Int[torch.Tensor, "batch k"], list[int]]:
    """The positions a forward over :func:`packed_batch` ``(rows)`` must unembed: every position from each
    row's first read (its prompt's last token) to its end, padded (:func:`pad_reads`); and those first
    reads, so that read ``r`` of row ``j`` sits at column ``r - first[j]``."""
    first = [next(iter(r.reads.values()))[0] for r in rows]   # every pair's first read: the prompt's last token
    return pad_reads([list(range(f, len(r.tokens))) for f, r in zip(first, rows, strict=True)]), first
