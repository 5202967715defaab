"""Layer hybrids: is the answer still computed somewhere in M₁?

The hybrid ``H_L`` (``0 ≤ L ≤ n_layers``) runs M₁'s embedding and blocks ``< L`` and feeds the residual
stream they produce into M₀'s blocks ``≥ L`` and M₀'s final norm and unembedding:

* ``H_0`` = M₁'s embedding, then all of M₀;
* ``H_n`` = all of M₁'s layers read through M₀'s readout (final norm + unembedding).

If an edit only gates the answer late (at layers ``≥ K``), M₁'s residual at every ``L ≤ K`` equals M₀'s
and ``H_L`` answers exactly as M₀ does: the knowledge is recoverable by swapping in later layers. If the
knowledge is gone from M₁'s residual early, M₀'s later layers cannot read it back and ``H_L`` fails for
every ``L`` after the edit.

**Metric** (per example, signed): the answer margin at the prompt's last position,
``margin = logit(answer) − mean(logit(corrupt answer and distractors))`` (first tokens; positive = the
model prefers the answer, 0 = no preference). **Recovery** ``R_L = mean_i margin(H_L)_i / mean_i
margin(M₀)_i`` (a ratio of means over examples, so one example whose base margin is near 0 cannot blow
it up; per-example ratios are kept too). 1 = as M₀; 0 = no preference left; < 0 = the wrong answers are
preferred. ``own`` is the same ratio for M₁ itself (M₁'s own readout).

**Efficiency**: one forward of M₁ caches its residual at every block input (``blocks.L.hook_resid_pre``)
and after the last block (``blocks.{n-1}.hook_resid_post``). For Llama-style models (``llama``, ``qwen2``:
no embedding scale, one causal mask, one rotary table) each ``H_L`` then runs only M₀'s blocks ``≥ L``
(the HF decoder layers, its final norm and unembedding), so a hybrid costs ``(n − L)/n`` of a forward;
other families run M₀ once on the batch repeated for a group of layers, a hook at each
``blocks.L.hook_resid_pre`` overwriting the rows of that layer's copy with M₁'s residual (every block runs;
the blocks below ``L`` on discarded input). Both paths are checked against hybrids built by copying M₁'s
weights into M₀ (tests).

**Caveat**: a hybrid is meaningful only when M₀ and M₁ share a residual basis (M₁ fine-tuned from M₀).
Measure that on retain rows (:func:`recovery_curves` returns both): a model trained separately fails its
hybrids on retain rows as much as on forget rows.
"""

import re
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int

from circuitforge.data.scoring import pad_batch
from circuitforge.data.task import ClozeItem, Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models import ModelHandle


@dataclass(frozen=True)
class MarginBatch:
    """Prompts of a cloze task, right-padded, with the token ids the margin compares.

    ``tokens``: ``[batch, pos]``; ``last``: ``[batch]`` last prompt position; ``answer``: ``[batch]``
    first answer token; ``others``: ``[batch, k]`` first tokens of the wrong options, ``other_mask``
    ``[batch, k]`` True on real entries (rows have different numbers of options)."""

    tokens: Int[torch.Tensor, "batch pos"]
    last: Int[torch.Tensor, " batch"]
    answer: Int[torch.Tensor, " batch"]
    others: Int[torch.Tensor, "batch k"]
    other_mask: torch.Tensor


def margin_batch(handle: ModelHandle, task: Task) -> MarginBatch:
    """Encode ``task``'s cloze rows (each needs a corrupt answer or distractors)."""
    seqs, ans, others = [], [], []

    def first(s: str) -> int:
        ids = handle.tokenizer(s, add_special_tokens=False)["input_ids"]
        if not ids:
            raise CircuitForgeError(f"{task.name}: option {s!r} encodes to no tokens")
        return int(ids[0])

    for i, it in enumerate(task.items):
        if not isinstance(it, ClozeItem):
            raise CircuitForgeError(f"{task.name}: hybrids need cloze rows")
        a = first(it.answer)
        o = sorted({first(s) for s in (it.corrupt_answer, *it.distractors) if s} - {a})
        if not o:
            raise CircuitForgeError(f"{task.name}, row {i + 1}: no wrong option with another first token")
        seqs.append(handle.to_tokens(it.prompt)[0].tolist())
        ans.append(a)
        others.append(o)
    k = max(len(o) for o in others)
    oth = torch.zeros(len(others), k, dtype=torch.long)
    mask = torch.zeros(len(others), k, dtype=torch.bool)
    for i, o in enumerate(others):
        oth[i, : len(o)] = torch.tensor(o)
        mask[i, : len(o)] = True
    return MarginBatch(pad_batch(seqs), torch.tensor([len(s) - 1 for s in seqs]), torch.tensor(ans), oth, mask)


def margins(logits: Float[torch.Tensor, "batch pos vocab"] | Float[torch.Tensor, "batch vocab"], mb: MarginBatch) -> Float[torch.Tensor, " batch"]:
    """Answer logit − mean wrong-option logit at each row's last prompt position (``logits`` at every
    position ``[batch, pos, vocab]``, or already at the last prompt positions ``[batch, vocab]``)."""
    last = (logits if logits.dim() == 2 else logits[torch.arange(len(mb.last)), mb.last.to(logits.device)]).float().cpu()
    a = last.gather(1, mb.answer[:, None])[:, 0]
    o = last.gather(1, mb.others)
    return a - (o * mb.other_mask).sum(1) / mb.other_mask.sum(1)


def _hook_names(n_layers: int) -> list[str]:
    return [f"blocks.{L}.hook_resid_pre" for L in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def _last_logits(handle: ModelHandle, tokens: Int[torch.Tensor, "batch pos"], last: Int[torch.Tensor, " batch"],
                 hooks: list[tuple[str, Any]]) -> Float[torch.Tensor, "batch vocab"]:
    """``handle``'s forward on ``tokens`` with ``hooks``, unembedding only position ``last[i]`` of row ``i``
    (the margin reads nothing else)."""
    return handle.logits_at(tokens, last[:, None], hooks)[:, 0]


@torch.no_grad()
def residuals(handle: ModelHandle, tokens: Int[torch.Tensor, "batch pos"], last: Int[torch.Tensor, " batch"]) -> tuple[list[Float[torch.Tensor, "batch pos d_model"]], Float[torch.Tensor, "batch vocab"]]:
    """``handle``'s residual stream at every block input and after the last block (``n_layers + 1``
    tensors, index L = input of block L), and its own logits at each row's position ``last``, from one
    forward pass."""
    names = _hook_names(handle.n_layers)
    store: dict[str, torch.Tensor] = {}

    def save(name: str):  # type: ignore[no-untyped-def]
        def fn(x: torch.Tensor, hook: object) -> None:
            store[name] = x.detach().clone()
        return fn

    logits = _last_logits(handle, tokens, last, [(n, save(n)) for n in names])
    return [store[n] for n in names], logits


@torch.no_grad()
def hybrid_logits(base: ModelHandle, resid: list[Float[torch.Tensor, "batch pos d_model"]],
                  tokens: Int[torch.Tensor, "batch pos"], layers: list[int], last: Int[torch.Tensor, " batch"]) -> Float[torch.Tensor, "group batch vocab"]:
    """Logits at each row's position ``last`` of the hybrids ``H_L`` for each ``L`` in ``layers`` (one
    forward of ``base`` on the batch repeated ``len(layers)`` times); ``resid`` is M₁'s residual from
    :func:`residuals`."""
    n, b = base.n_layers, tokens.shape[0]
    names = _hook_names(n)
    hooks = []
    for j, L in enumerate(layers):
        def patch(x: torch.Tensor, hook: object, j: int = j, L: int = L) -> torch.Tensor:
            out = x.clone()
            out[j * b : (j + 1) * b] = resid[L].to(x.device, x.dtype)
            return out
        hooks.append((names[L], patch))
    logits = _last_logits(base, tokens.repeat(len(layers), 1), last.repeat(len(layers)), hooks)
    return logits.reshape(len(layers), b, logits.shape[-1])


_RESUMABLE = ("llama", "qwen2")


def resumable(handle: ModelHandle) -> bool:
    """True when :func:`resume_logits` can run ``handle``'s upper blocks alone (Llama-style HF models)."""
    hf = handle.hf
    types = getattr(hf.config, "layer_types", None) or ()
    return (getattr(hf.config, "model_type", None) in _RESUMABLE and hasattr(hf, "model") and hasattr(hf.model, "layers")
            and all(t == "full_attention" for t in types))   # one causal mask for every layer (no sliding window)


@torch.no_grad()
def resume_logits(base: ModelHandle, resid: Float[torch.Tensor, "batch pos d_model"], start: int,
                  last: Int[torch.Tensor, " batch"] | None = None) -> Float[torch.Tensor, "batch pos vocab"] | Float[torch.Tensor, "batch vocab"]:
    """``base``'s logits when ``resid`` enters block ``start`` (``start = n_layers``: only the final norm and
    unembedding): the HF decoder layers ``start..n-1`` with the causal mask and rotary embeddings of
    positions ``0..pos-1``, as in ``LlamaModel.forward`` (no padding mask: rows are right-padded and only
    positions up to each row's last prompt token are read). Only for :func:`resumable` models.
    ``last``: unembed only position ``last[i]`` of row ``i`` (``[batch, vocab]``; the final norm is per
    position, so this equals the full logits read there)."""
    from transformers.masking_utils import create_causal_mask

    m = base.hf.model
    h = resid.to(base.device, next(m.parameters()).dtype)
    if start < base.n_layers:
        pos = torch.arange(h.shape[1], device=h.device)[None]
        mask = create_causal_mask(config=m.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=pos)
        pe = m.rotary_emb(h, position_ids=pos)
        for layer in m.layers[start : base.n_layers]:
            h = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=pos)
    if last is not None:
        h = h[torch.arange(h.shape[0], device=h.device), last.to(h.device)]
    return base.hf.lm_head(m.norm(h))


@dataclass(frozen=True)
class HybridMargins:
    """Per-example margins: ``base`` [batch] (M₀), ``own`` [batch] (M₁), ``hybrid`` [len(layers), batch]
    (row j = hybrid ``H_{layers[j]}``)."""

    base: Float[torch.Tensor, " batch"]
    own: Float[torch.Tensor, " batch"]
    hybrid: Float[torch.Tensor, "layers batch"]
    layers: list[int]


def hybrid_layers(n_layers: int, points: int | None) -> list[int]:
    """``0..n_layers`` when ``points`` is None or ≥ n_layers + 1, else ``points`` evenly spaced layers from
    0 to ``n_layers`` (both ends included)."""
    if points is None or points >= n_layers + 1:
        return list(range(n_layers + 1))
    if points < 2:
        raise ValueError("hybrid points must be ≥ 2")
    return sorted({round(i * n_layers / (points - 1)) for i in range(points)})


_BLOCK = re.compile(r"\.(?:layers|h)\.(\d+)\.")
_EMBED = ("embed_tokens", "wte", "wpe")


def differing_parts(a: ModelHandle, b: ModelHandle) -> frozenset[int] | None:
    """The parts of the network in which ``a``'s weights differ from ``b``'s: ``-1`` the embedding,
    ``0..n-1`` the blocks, ``n`` the readout (final norm, unembedding; a tied embedding counts for both).
    None when the two state dicts do not line up or a differing tensor cannot be placed (then every part
    must be assumed to differ)."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return None
    n = a.n_layers
    tied = bool(getattr(a.hf.config, "tie_word_embeddings", False))
    out: set[int] = set()
    for k, v in sa.items():
        w = sb[k]
        if v.shape != w.shape or v.dtype != w.dtype:
            return None
        if torch.equal(v, w):
            continue
        m = _BLOCK.search(k)
        if m:
            if int(m.group(1)) >= n:
                return None
            out.add(int(m.group(1)))
        elif any(e in k for e in _EMBED):
            out |= {-1, n} if tied else {-1}
        else:
            out.add(n)
    return frozenset(out)


@dataclass(frozen=True)
class Residuals:
    """One model's residual stream on a task (:func:`residuals`: ``n_layers + 1`` tensors
    ``[batch, pos, d_model]``) and its own margins ``[batch]``: what :func:`hybrid_margins` needs of the
    model whose lower layers feed a hybrid (M₁ in ``H_L``, M₀ in the reverse ``H'_L``)."""

    resid: list[Float[torch.Tensor, "batch pos d_model"]]
    margins: Float[torch.Tensor, " batch"]


def model_residuals(handle: ModelHandle, task: Task) -> Residuals:
    """:class:`Residuals` of ``handle`` on ``task`` (one forward pass)."""
    mb = margin_batch(handle, task)
    resid, logits = residuals(handle, mb.tokens, mb.last)
    return Residuals(resid, margins(logits, mb))


def hybrid_margins(base: ModelHandle, edited: ModelHandle, task: Task, layers: list[int] | None = None,
                   max_rows_per_pass: int = 64, base_margins: Float[torch.Tensor, " batch"] | None = None,
                   resume: bool | None = None, edited_residuals: Residuals | None = None,
                   parts: frozenset[int] | None | str = "auto") -> HybridMargins:
    """Margins of M₀, M₁ and the layer hybrids ``H_L`` for ``L`` in ``layers`` (default every
    ``0..n_layers``) on ``task`` (see module doc). Neither model is modified.

    ``base_margins``: M₀'s margins on ``task`` when already computed (one forward saved per call).
    ``edited_residuals``: M₁'s :class:`Residuals` on ``task`` when already computed (another forward saved).
    ``resume``: run only M₀'s blocks ``≥ L`` per hybrid (default: when :func:`resumable`); False forces the
    hooked full-depth path.
    ``parts``: :func:`differing_parts` of the two models (``"auto"``: computed here; None: unknown). A
    hybrid whose lower part (embedding, blocks ``< L``) is identical in both models *is* M₀, and one whose
    upper part (blocks ``≥ L``, readout) is identical *is* M₁: their margins are copied, not recomputed
    (an edit of the last blocks leaves only the hybrids cut inside the edited range to run)."""
    mb = margin_batch(base, task)
    n = base.n_layers
    if isinstance(parts, str):
        parts = differing_parts(base, edited)
    with torch.no_grad():
        m0 = base_margins if base_margins is not None else _own_margins(base, task)
        er = edited_residuals if edited_residuals is not None else model_residuals(edited, task)
        resid = er.resid
        layers = list(range(n + 1)) if layers is None else sorted(layers)
        lo, hi = (min(parts), max(parts)) if parts else ((n + 1, -2) if parts is not None else (-1, n))
        run = [L for L in layers if lo < L <= hi]   # L ≤ lo: H_L = M₀; L > hi: H_L = M₁
        got: dict[int, torch.Tensor] = {}
        if resumable(base) if resume is None else resume:
            got = {L: margins(resume_logits(base, resid[L], L, mb.last), mb) for L in run}
        else:
            per = max(1, max_rows_per_pass // mb.tokens.shape[0])
            for g in range(0, len(run), per):
                grp = run[g : g + per]
                lg = hybrid_logits(base, resid, mb.tokens, grp, mb.last)
                got.update({L: margins(lg[j], mb) for j, L in enumerate(grp)})
        out = [got[L] if L in got else (m0 if L <= lo else er.margins) for L in layers]
    return HybridMargins(m0, er.margins, torch.stack(out), layers)


def _own_margins(handle: ModelHandle, task: Task) -> Float[torch.Tensor, " batch"]:
    mb = margin_batch(handle, task)
    with torch.no_grad():
        return margins(_last_logits(handle, mb.tokens, mb.last, []), mb)


def base_margins(base: ModelHandle, task: Task) -> Float[torch.Tensor, " batch"]:
    """M₀'s margins on ``task`` (to pass to several :func:`hybrid_margins` calls against one base)."""
    return _own_margins(base, task)
