"""Weight gradients collected at chosen token positions only (MANSU's ``forget_positions="subject"``).

Facts are recalled by enriching the *subject's* representation in mid-layer MLPs and reading it out at the
last position (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME; Geva et al. 2023).
The prompts of other facts in the same template share every position but the subject's, while paraphrases of
a fact share its subject. An edit driven by the gradient at the subject positions alone should therefore
reach the paraphrases of a targeted fact and spare the other facts of its template; one driven by every
position may as well learn "answers in this template are wrong".

The subject is located without annotations, from the counterfactual pair every built-in row carries: the
prompt tokens that differ from the ``corrupt_prompt``'s (first differing token through the last one before the
common suffix).

:func:`weight_grad_positions` makes every listed ``nn.Linear`` compute ``W x_t`` at kept positions and
``sg(W) x_t`` elsewhere: the forward is unchanged, activation gradients flow through every position as before
(``∂/∂x_t`` is ``Wᵀ g_t`` either way), and ``∂/∂W = Σ_{t kept} g_t x_tᵀ``.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from jaxtyping import Bool

from circuitforge.data import ChoiceItem, ClozeItem, Task
from circuitforge.data.scoring import encode
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle


def subject_span(handle: ModelHandle, item: ClozeItem | ChoiceItem) -> tuple[int, int]:
    """``[start, stop)`` token positions (BOS included in the count) of the prompt where it differs from its
    counterfactual ``corrupt_prompt``: the subject the counterfactual swaps."""
    if not isinstance(item, ClozeItem) or not item.corrupt_prompt:
        raise CircuitForgeError("forget_positions='subject' needs cloze rows with a corrupt_prompt "
                                "(the subject is the part of the prompt the counterfactual changes)")
    a, na = encode(handle, item.prompt, "")
    b, nb = encode(handle, item.corrupt_prompt, "")
    a, b = a[:na], b[:nb]
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    if start == len(a) == len(b):
        raise CircuitForgeError(f"prompt and corrupt_prompt encode to the same tokens: {item.prompt!r}")
    end = 0
    while end < min(len(a), len(b)) - start and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    return start, max(start + 1, len(a) - end)


def subject_mask(handle: ModelHandle, task: Task, rows: list[int], row_of: torch.Tensor, width: int,
                 ) -> Bool[torch.Tensor, "seq pos"]:
    """True at each sequence's subject positions. ``row_of[s]``: index into ``rows`` of sequence ``s`` (an
    :class:`~circuitforge.surgery.objectives.AnswerBatch`'s ``row``); ``width``: the batch's padded length."""
    spans = [subject_span(handle, task.items[i]) for i in rows]
    keep = torch.zeros(len(row_of), width, dtype=torch.bool)
    for s, r in enumerate(row_of.tolist()):
        a, b = spans[r]
        keep[s, a:b] = True
    return keep


@contextmanager
def weight_grad_positions(handle: ModelHandle, names: list[str] | set[str], keep: Bool[torch.Tensor, "seq pos"],
                          ) -> Iterator[None]:
    """Within the block, the weights ``names`` (HF names of ``nn.Linear`` weights) collect gradient only
    from the positions where ``keep`` is True; outputs and activation gradients are unchanged (module doc).
    Every forward inside must have ``keep``'s batch shape."""
    params = handle.named_parameters()
    ids = {id(params[n]) for n in names}
    hooks = []

    def hook(mod: torch.nn.Linear, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        k = keep.to(out.device)
        if k.shape != out.shape[:2]:
            raise CircuitForgeError(f"position mask {tuple(k.shape)} does not match the batch {tuple(out.shape[:2])}")
        frozen = F.linear(inp[0], mod.weight.detach(), None if mod.bias is None else mod.bias.detach())
        return torch.where(k[..., None], out, frozen)

    for _, m in handle.hf.named_modules():
        if isinstance(m, torch.nn.Linear) and id(m.weight) in ids:
            hooks.append(m.register_forward_hook(hook))
    found = len(hooks)
    try:
        if found != len(ids):
            raise CircuitForgeError(f"{len(ids) - found} of the weights are not nn.Linear weights this model calls")
        yield
    finally:
        for h in hooks:
            h.remove()
