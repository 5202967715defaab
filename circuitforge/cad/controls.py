"""Ground-truth controls for CAD: edits whose kind (erasure / suppression / none) is known by construction.

* :func:`suppression_edit` — touches only the unembedding rows of the task's answer vocabulary: it projects
  out of them the directions along which the circuit's output separates clean from corrupt prompts
  (top principal directions of the final normalised residual differences). Every layer, and so the
  whole circuit, computes exactly what it computed before; only the readout stops reading it.
* :func:`erasure_edit` — zeroes the weights of the circuit's upstream components (its heads' q/o slices,
  its KV heads' k/v slices, its MLPs), removing the computation itself.
* :func:`unchanged_copy` — an independent copy with identical weights.
* :func:`late_ascent` — gradient ascent on the forget answers through the last ``layers`` blocks only
  (every earlier weight, the embedding and the readout bit-identical): a *trained* suppression whose
  earlier residual stream is M₀'s by construction, unlike the readout edit not restricted to the readout.
* :func:`early_ascent` — the mirror image: ascent through the first ``layers`` blocks only (every later
  block and the readout bit-identical), so whatever M₁ forgets is missing from its residual stream from
  block ``layers`` on: erasure in the hybrid sense, with M₀'s residual basis.
* :func:`subject_erasure` — the forget subjects' input embeddings replaced by the mean embedding: the
  information is gone before the first block (the input-side mirror of the readout edit).

Each returns a new handle; the input is never modified.
"""

from collections.abc import Iterable

import torch
from jaxtyping import Float

from circuitforge.data.task import ClozeItem, Task
from circuitforge.models import ModelHandle, clone, component_params, parse_node


def unchanged_copy(handle: ModelHandle) -> ModelHandle:
    return clone(handle, spec=f"{handle.spec}+unchanged")


def untie_unembedding(handle: ModelHandle) -> torch.nn.Parameter:
    """Give ``handle`` its own unembedding matrix (``[vocab, d_model]``) if it was tied to the embedding,
    and mark the config untied so a saved checkpoint keeps both. Returns the unembedding parameter."""
    lin = handle.bridge.unembed.original_component
    emb = handle.bridge.embed.original_component
    if lin.weight is emb.weight or lin.weight.data_ptr() == emb.weight.data_ptr():
        lin.weight = torch.nn.Parameter(lin.weight.detach().clone(), requires_grad=lin.weight.requires_grad)
        handle.hf.config.tie_word_embeddings = False
        if hasattr(handle.hf.config, "get_text_config"):
            handle.hf.config.get_text_config().tie_word_embeddings = False
        handle._canonical = None
    handle.invalidate_identity()
    return lin.weight


def answer_vocabulary(handle: ModelHandle, task: Task) -> list[int]:
    """First tokens of every answer, corrupt answer and distractor in ``task``."""
    ids: set[int] = set()
    for it in task.items:
        if not isinstance(it, ClozeItem):
            continue
        for s in (it.answer, it.corrupt_answer, *it.distractors):
            if s:
                ids.add(handle.tokenizer(s, add_special_tokens=False)["input_ids"][0])
    return sorted(ids)


@torch.no_grad()
def _final_normed(handle: ModelHandle, prompts: list[str]) -> Float[torch.Tensor, "n d_model"]:
    from circuitforge.data.scoring import pad_batch

    seqs = [handle.to_tokens(p)[0].tolist() for p in prompts]
    toks = pad_batch(seqs)
    store: dict[str, torch.Tensor] = {}

    def grab(x: torch.Tensor, hook: object) -> None:
        store["x"] = x.detach()

    with handle.bridge.hooks(fwd_hooks=[("ln_final.hook_out", grab)]):
        handle.bridge(toks)
    last = torch.tensor([len(s) - 1 for s in seqs])
    return store["x"][torch.arange(len(seqs)), last]


def suppression_edit(handle: ModelHandle, task: Task, k: int | None = None) -> ModelHandle:
    """Project the top-``k`` clean−corrupt residual-difference directions out of the answer rows of the
    unembedding (see module doc); ``k=None`` removes all of them (the rank of the differences), which
    on the tiny trained model drops forget accuracy from 1.0 to chance while retain stays at 1.0.
    Requires ``corrupt_prompt`` on the rows used."""
    items = [it for it in task.items if isinstance(it, ClozeItem) and it.corrupt_prompt]
    if not items:
        raise ValueError("suppression_edit needs cloze rows with corrupt_prompt")
    diff = _final_normed(handle, [it.prompt for it in items]) - _final_normed(handle, [it.corrupt_prompt for it in items])  # type: ignore[misc]
    _, _, vh = torch.linalg.svd(diff, full_matrices=False)
    basis = vh if k is None else vh[: min(k, vh.shape[0])]  # [k, d_model], orthonormal rows
    out = clone(handle, spec=f"{handle.spec}+suppression")
    w = untie_unembedding(out)
    rows = torch.tensor(answer_vocabulary(out, task))
    with torch.no_grad():
        wr = w.data[rows]
        w.data[rows] = wr - (wr @ basis.T) @ basis
    out.invalidate_identity()
    return out


def erasure_edit(handle: ModelHandle, nodes: Iterable[str], upstream_of_layer: int | None = None) -> ModelHandle:
    """Zero the parameter slices of the circuit components ``nodes`` (component ids such as ``a3.h1``,
    ``a3.kv0``, ``m2``) in layers ``< upstream_of_layer`` (all layers when None)."""
    out = clone(handle, spec=f"{handle.spec}+erasure")
    params = out.named_parameters()
    with torch.no_grad():
        for node in nodes:
            _, layer, _ = parse_node(node)
            if upstream_of_layer is not None and layer >= upstream_of_layer:
                continue
            for s in component_params(out, node, params):
                s.view.zero_()
    out.invalidate_identity()
    return out


def with_base_readout(edited: ModelHandle, base: ModelHandle) -> ModelHandle:
    """A copy of ``edited`` whose final norm and unembedding are ``base``'s: its logits are M₀'s readout
    applied to M₁'s final residual stream. Attributing it measures the *mechanism* (what M₁'s layers
    compute, read the way M₀ reads it) rather than M₁'s own behaviour."""
    out = clone(edited, spec=f"{edited.spec}+base-readout")
    w = untie_unembedding(out)
    src_lin = base.bridge.unembed.original_component
    dst_lin = out.bridge.unembed.original_component
    with torch.no_grad():
        w.data.copy_(src_lin.weight.data)
        if getattr(dst_lin, "bias", None) is not None and getattr(src_lin, "bias", None) is not None:
            dst_lin.bias.data.copy_(src_lin.bias.data)
        for p_dst, p_src in zip(out.bridge.ln_final.parameters(), base.bridge.ln_final.parameters(), strict=True):
            p_dst.data.copy_(p_src.data)
    out.invalidate_identity()
    return out


def late_ascent(handle: ModelHandle, forget: Task, layers: int = 1, lr: float = 1e-3, max_steps: int = 200,
                target_forget_acc: float = 0.25, seed: int = 0, retain: Task | None = None) -> ModelHandle:
    """:func:`block_ascent` on the last ``layers`` blocks."""
    n = handle.n_layers
    return block_ascent(handle, forget, list(range(n - layers, n)), lr, max_steps, target_forget_acc, seed,
                        retain=retain, tag=f"late-ascent-{layers}")


def early_ascent(handle: ModelHandle, forget: Task, layers: int = 1, lr: float = 1e-3, max_steps: int = 200,
                 target_forget_acc: float = 0.25, seed: int = 0, retain: Task | None = None) -> ModelHandle:
    """:func:`block_ascent` on the first ``layers`` blocks."""
    return block_ascent(handle, forget, list(range(layers)), lr, max_steps, target_forget_acc, seed,
                        retain=retain, tag=f"early-ascent-{layers}")


def block_ascent(handle: ModelHandle, forget: Task, blocks: list[int], lr: float = 1e-3, max_steps: int = 200,
                 target_forget_acc: float = 0.25, seed: int = 0, retain: Task | None = None,
                 tag: str = "block-ascent") -> ModelHandle:
    """Gradient ascent (Adam, full batch of ``forget``'s rows in order, mean answer NLL maximised; with
    ``retain``, plus the mean answer NLL of ``retain``'s rows minimised, GradDiff-style, so the edit is
    specific) on the weights of the transformer blocks ``blocks`` only, until forget accuracy
    (:func:`circuitforge.data.evaluate`) is ≤ ``target_forget_acc`` or ``max_steps``. Every other weight
    stays bit-identical. Returns a new handle; ``handle`` is not modified."""
    from circuitforge.data import evaluate
    from circuitforge.surgery.objectives import answer_batch, answer_nll

    torch.manual_seed(seed)
    out = clone(handle, spec=f"{handle.spec}+{tag}")
    layers = list(out.hf.model.layers if hasattr(out.hf, "model") else out.hf.transformer.h)
    params = list({id(p): p for i in blocks for p in layers[i].parameters()}.values())
    keep = {id(p) for p in params}
    for p in out.hf.parameters():
        p.requires_grad_(id(p) in keep)
    batch = answer_batch(out, forget)
    keep_batch = answer_batch(out, retain) if retain is not None else None
    opt = torch.optim.Adam(params, lr=lr)
    out.bridge.eval()
    try:
        for _ in range(max_steps):
            with torch.no_grad():
                if evaluate(out, forget).accuracy <= target_forget_acc:
                    break
            opt.zero_grad(set_to_none=True)
            loss = -answer_nll(out.logits(batch.tokens), batch)
            if keep_batch is not None:
                loss = loss + answer_nll(out.logits(keep_batch.tokens), keep_batch)
            loss.backward()
            opt.step()
    finally:
        for p in out.hf.parameters():
            p.grad = None
            p.requires_grad_(True)
    out.invalidate_identity()
    return out


def subject_tokens(handle: ModelHandle, task: Task) -> list[int]:
    """Token ids where a row's prompt differs from its corrupt prompt (the subject), over ``task``."""
    ids: set[int] = set()
    for it in task.items:
        if isinstance(it, ClozeItem) and it.corrupt_prompt:
            a, b = handle.to_tokens(it.prompt)[0].tolist(), handle.to_tokens(it.corrupt_prompt)[0].tolist()
            ids |= {x for x, y in zip(a, b, strict=False) if x != y}
    return sorted(ids)


def subject_erasure(handle: ModelHandle, task: Task) -> ModelHandle:
    """Replace the input embedding rows of ``task``'s subject tokens (:func:`subject_tokens`) by the mean
    embedding row (the unembedding is untied first and left as it was). Returns a new handle."""
    out = clone(handle, spec=f"{handle.spec}+subject-erasure")
    untie_unembedding(out)
    emb = out.bridge.embed.original_component.weight
    rows = torch.tensor(subject_tokens(out, task))
    with torch.no_grad():
        emb.data[rows] = emb.data.mean(0, keepdim=True)
    out.invalidate_identity()
    return out
