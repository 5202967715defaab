"""Clean and corrupt inputs for attribution, per corruption kind.

* ``"counterfactual"`` — each row's ``corrupt_prompt`` (e.g. another country). Clean and corrupt prompts
  must have the same token length row by row (positions are compared one to one); a mismatch raises a
  :class:`~circuitforge.errors.CircuitForgeError` naming the row, never a silently shifted comparison.
* ``"mean"`` — every writer's corrupted output is its mean clean output over all real (non-padding)
  tokens of the task (one ``d_model`` vector per writer).
* ``"zero"`` — every writer's corrupted output is 0.

Prompts are encoded with BOS and right-padded; with causal attention no real position sees the padding,
so padded positions carry no gradient and do not affect any score.
"""

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int

from circuitforge.data.scoring import pad_batch
from circuitforge.data.task import ClozeItem, Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle

Corruption = Literal["counterfactual", "mean", "zero"]
CORRUPTIONS: tuple[str, ...] = ("counterfactual", "mean", "zero")


@dataclass(frozen=True)
class PromptBatch:
    """A task encoded for attribution.

    Attributes:
        clean: ``[batch, pos]`` clean prompt tokens (BOS + prompt, right-padded with 0).
        corrupt: ``[batch, pos]`` corrupt prompt tokens (same per-row lengths), or None unless
            ``corruption == "counterfactual"``.
        last: ``[batch]`` index of each row's last prompt token (where the answer is predicted).
        valid: ``[batch, pos]`` True on real tokens.
        answer: ``[batch]`` first token of each answer.
        corrupt_answer: ``[batch]`` first token of each corrupt answer, -1 where the row has none.
        distractors: ``[batch, k]`` first tokens of the distractors, -1 padded (k may be 0).
    """

    clean: Int[torch.Tensor, "batch pos"]
    corrupt: Int[torch.Tensor, "batch pos"] | None
    last: Int[torch.Tensor, " batch"]
    valid: Bool[torch.Tensor, "batch pos"]
    answer: Int[torch.Tensor, " batch"]
    corrupt_answer: Int[torch.Tensor, " batch"]
    distractors: Int[torch.Tensor, "batch k"]
    corruption: str

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    def rows(self, idx: "slice | torch.Tensor") -> "PromptBatch":
        """The sub-batch of rows ``idx``."""
        return PromptBatch(
            self.clean[idx], None if self.corrupt is None else self.corrupt[idx], self.last[idx], self.valid[idx],
            self.answer[idx], self.corrupt_answer[idx], self.distractors[idx], self.corruption,
        )


def _first_token(handle: ModelHandle, text: str, where: str) -> int:
    ids = handle.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise CircuitForgeError(f"{where}: {text!r} encodes to no tokens")
    return int(ids[0])


def encode_task(handle: ModelHandle, task: Task, corruption: str = "counterfactual") -> PromptBatch:
    """Encode ``task`` for ``handle`` (see module docstring).

    Raises:
        CircuitForgeError: unknown corruption, a non-cloze task, a row without ``corrupt_prompt`` under
            counterfactual corruption, or clean/corrupt token lengths that differ (naming the row).
    """
    if corruption not in CORRUPTIONS:
        raise CircuitForgeError(f"corruption must be one of {', '.join(CORRUPTIONS)}, not {corruption!r}")
    if task.kind != "cloze":
        raise CircuitForgeError(f"{task.name}: attribution needs a cloze task (prompt/answer rows), not {task.kind!r}")
    if len(task) == 0:
        raise CircuitForgeError(f"{task.name}: no rows")
    clean, corrupt, ans, cans, dis = [], [], [], [], []
    for i, it in enumerate(task.items):
        assert isinstance(it, ClozeItem)
        where = f"{task.name}, row {i + 1}"
        c = handle.to_tokens(it.prompt)[0].tolist()
        clean.append(c)
        ans.append(_first_token(handle, it.answer, where))
        cans.append(-1 if it.corrupt_answer is None else _first_token(handle, it.corrupt_answer, where))
        dis.append([_first_token(handle, d, where) for d in it.distractors])
        if corruption == "counterfactual":
            if it.corrupt_prompt is None:
                raise CircuitForgeError(f"{where}: counterfactual corruption needs a corrupt_prompt "
                                        "(or use corruption='mean' / 'zero')")
            kt = handle.to_tokens(it.corrupt_prompt)[0].tolist()
            if len(kt) != len(c):
                raise CircuitForgeError(
                    f"{where}: clean prompt has {len(c)} tokens but corrupt prompt has {len(kt)} "
                    f"({it.prompt!r} vs {it.corrupt_prompt!r}); attribution compares positions one to one, "
                    "so clean and corrupt prompts must have the same token length"
                )
            corrupt.append(kt)
    same = [i + 1 for i, (a, b) in enumerate(zip(ans, cans, strict=True)) if a == b]
    if same:
        warnings.warn(f"{task.name}: rows {same[:10]} have answer and corrupt answer with the same first token; "
                      "their logit difference is 0", stacklevel=2)
    width = max((len(d) for d in dis), default=0)
    dist = torch.full((len(dis), width), -1, dtype=torch.long)
    for i, d in enumerate(dis):
        dist[i, : len(d)] = torch.tensor(d, dtype=torch.long)
    lengths = torch.tensor([len(c) for c in clean])
    tokens = pad_batch(clean).to(handle.device)
    valid = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
    return PromptBatch(
        clean=tokens,
        corrupt=pad_batch(corrupt).to(handle.device) if corruption == "counterfactual" else None,
        last=lengths - 1,
        valid=valid,
        answer=torch.tensor(ans),
        corrupt_answer=torch.tensor(cans),
        distractors=dist,
        corruption=corruption,
    )
