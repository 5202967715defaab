"""Shared capture/patch plumbing over a TransformerLens 4 ``TransformerBridge`` (``shared/TL4-NOTES.md`` §2–3).

Writers are read at ``blocks.0.hook_resid_pre`` (``input``: token + position embedding),
``blocks.L.attn.hook_result`` (``[batch, pos, H, d_model]``, one slice per head) and
``blocks.L.hook_mlp_out``. Readers are ``blocks.L.attn.hook_q_input`` (``[batch, pos, H, d_model]``),
``hook_k_input`` / ``hook_v_input`` (``[batch, pos, G, d_model]``: one per KV head — grouped-query
attention stays native), ``blocks.L.hook_mlp_in`` and ``ln_final.hook_in`` (``logits``). The q/k/v/mlp
inputs are per-reader forks of the residual (taken before the norm), so patching one changes only that
reader, and their gradients sum to the residual's gradient.

**Norms after attention and MLP (Gemma 3).** There ``blocks.L.hook_mlp_out`` already is the
post-feedforward norm's output, i.e. what the MLP adds to the residual, but ``attn.hook_result`` is taken
*before* the post-attention norm (``blocks.L.ln1_post``), so heads do not add to the residual directly. A
head's writer is then its **residual share**: ``result_h · g`` with ``g = (1 + w) / sqrt(mean(x²) + eps)`` the
norm's gain at this position, read from its ``hook_scale`` (``x = Σ_h result_h``) in the same pass. The
shares sum to the norm's output exactly, so writers still add up to the residual stream; patching a head
replaces its share (the other heads keep theirs, the norm's gain is not recomputed). This happens at
``blocks.L.ln1_post.hook_out`` (:func:`post_attention_norms`), the same pass, no extra cost to speak of.

Inside hooks every slot is handled as a stack ``[count, batch, pos, d_model]`` (``count`` = heads in the
slot, or 1). Everything is undone on exit: hooks are removed in ``finally``, and the bridge's flags,
train/eval mode and the parameters' ``requires_grad`` are restored.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int

from circuitforge.attribution.graph import Layout, layout_of
from circuitforge.models.handle import ModelHandle

FLAGS = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in")


@dataclass(frozen=True)
class Slot:
    """One hook point and the writer/reader indices it holds (``start .. start+count-1``)."""

    name: str
    kind: str  # writers: input/heads/mlp; readers: q/k/v/mlp/logits
    layer: int
    start: int
    count: int
    flat: bool  # the activation is [batch, pos, d_model] (no head axis)


def writer_slots(lay: Layout) -> list[Slot]:
    out = [Slot("blocks.0.hook_resid_pre", "input", -1, 0, 1, True)]
    for L in range(lay.n_layers):
        base = 1 + L * (lay.n_heads + 1)
        out.append(Slot(f"blocks.{L}.attn.hook_result", "heads", L, base, lay.n_heads, False))
        out.append(Slot(f"blocks.{L}.hook_mlp_out", "mlp", L, base + lay.n_heads, 1, True))
    return out


def reader_slots(lay: Layout) -> list[Slot]:
    out, H, G = [], lay.n_heads, lay.n_kv_heads
    for L in range(lay.n_layers):
        base = L * lay.reader_block
        out.append(Slot(f"blocks.{L}.attn.hook_q_input", "q", L, base, H, False))
        out.append(Slot(f"blocks.{L}.attn.hook_k_input", "k", L, base + H, G, False))
        out.append(Slot(f"blocks.{L}.attn.hook_v_input", "v", L, base + H + G, G, False))
        out.append(Slot(f"blocks.{L}.hook_mlp_in", "mlp", L, base + H + 2 * G, 1, True))
    out.append(Slot("ln_final.hook_in", "logits", lay.n_layers, lay.n_layers * lay.reader_block, 1, True))
    return out


def post_attention_norms(handle: ModelHandle) -> list[Any] | None:
    """The bridged norm between each layer's attention output and the residual stream (Gemma 3's
    ``post_attention_layernorm``, ``blocks.L.ln1_post``), or None when heads write to the residual stream
    directly (Llama, Qwen2, GPT-2)."""
    b = handle.bridge
    if "blocks.0.ln1_post.hook_scale" not in b.hook_dict:
        return None
    return [blk.ln1_post for blk in b.blocks]


def norm_gain(norm: Any, scale: Float[torch.Tensor, "*batch 1"]) -> Float[torch.Tensor, "*batch d_model"]:
    """A bridged RMSNorm ``y = x / scale · w`` (``1 + w`` for Gemma's offset weights) as a per-position
    diagonal map of its input, ``y = x · norm_gain(norm, scale)``, where ``scale`` is the value its
    ``hook_scale`` saw in this pass (``sqrt(mean(x²) + eps)``, or whatever a hook replaced it with)."""
    w = norm.original_component.weight.float()
    if getattr(norm, "uses_weight_offset", False):
        w = 1.0 + w
    return w / scale.float()


def to_stack(x: torch.Tensor, slot: Slot) -> torch.Tensor:
    """``[batch, pos, (count,) d]`` → ``[count, batch, pos, d]`` (a view)."""
    return x.unsqueeze(0) if slot.flat else x.permute(2, 0, 1, 3)


def from_stack(s: torch.Tensor, slot: Slot) -> torch.Tensor:
    """Inverse of :func:`to_stack`."""
    return s[0] if slot.flat else s.permute(1, 2, 0, 3)


@contextmanager
def prepared(handle: ModelHandle, flags: bool = True) -> Iterator[None]:
    """Turn on the per-head result / split q,k,v input / mlp_in hooks (unless ``flags=False``), eval
    mode and frozen parameters; restore all three on exit."""
    b = handle.bridge
    old_flags = {f: getattr(b.cfg, f) for f in FLAGS}
    was_training = b.training
    params = list(b.parameters())
    old_rg = [p.requires_grad for p in params]
    try:
        if flags:
            b.set_use_attn_result(True)
            b.set_use_split_qkv_input(True)
            b.set_use_hook_mlp_in(True)
        b.eval()
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, rg in zip(params, old_rg, strict=True):
            p.requires_grad_(rg)
        b.train(was_training)
        b.set_use_attn_result(old_flags["use_attn_result"])
        b.set_use_split_qkv_input(old_flags["use_split_qkv_input"])
        b.set_use_hook_mlp_in(old_flags["use_hook_mlp_in"])


@contextmanager
def installed(bridge: Any, hooks: list[tuple[str, Callable[..., Any]]]) -> Iterator[None]:
    """Add forward hooks ``fn(activation, hook)``; they are removed in ``finally``."""
    added = []
    try:
        for name, fn in hooks:
            hp = bridge.hook_dict[name]
            added.append((hp, hp.add_hook(fn, dir="fwd")))
        yield
    finally:
        for hp, h in added:
            h.hook.remove()
            if h in hp.fwd_hooks:
                hp.fwd_hooks.remove(h)


SlotFn = Callable[[Slot, torch.Tensor], torch.Tensor | None]


@runtime_checkable
class GradSink(Protocol):
    """Consumer of streamed reader gradients (:func:`run` with ``sink``)."""

    def writers_ready(self, writers: Float[torch.Tensor, "writers batch pos d_model"] | None) -> None: ...

    def grad(self, slot: Slot, g: Float[torch.Tensor, "count batch pos d_model"]) -> None: ...


@dataclass
class RunOut:
    """What :func:`run` returns. ``writers``: ``[W, batch, pos, d]`` when captured; ``grads``: per reader
    slot ``[count, batch, pos, d]`` gradients of the metric w.r.t. the reader inputs."""

    last_logits: Float[torch.Tensor, "batch vocab"]
    metric: float | None = None
    writers: Float[torch.Tensor, "writers batch pos d_model"] | None = None
    grads: list[torch.Tensor] | None = None


def run(
    handle: ModelHandle,
    tokens: Int[torch.Tensor, "batch pos"],
    last: Int[torch.Tensor, " batch"],
    *,
    metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
    writer_fn: SlotFn | None = None,
    reader_fn: SlotFn | None = None,
    capture: bool = False,
    grads: bool = False,
    sink: "GradSink | None" = None,
) -> RunOut:
    """One forward pass (call inside :func:`prepared`).

    ``writer_fn(slot, stack)`` / ``reader_fn(slot, stack)`` see each slot's activation as a stack
    ``[count, batch, pos, d]`` and may return a replacement stack. With ``capture`` the (possibly
    replaced) writer outputs are returned; with ``grads`` the metric (``metric(last_logits) -> scalar``)
    is differentiated w.r.t. every reader input (a zero tensor added at each reader keeps the graph
    intact, so no backward hooks are needed and no parameter gradients are computed).

    With a ``sink`` (and ``grads``) the reader gradients are not returned but streamed: after the forward
    pass ``sink.writers_ready(writers)`` gets the captured writer stack (``capture`` must be on, or None),
    then each reader slot's gradient ``[count, batch, pos, d]`` is handed to ``sink.grad(slot, g)`` the
    moment the backward pass reaches it, and dropped — so at most one slot's gradient is alive, not all
    of them (one zero scalar leaf shared by every reader keeps the graph intact).
    """
    lay = layout_of(handle)
    wslots, rslots = writer_slots(lay), reader_slots(lay)
    captured: list[torch.Tensor] = []
    leaves: list[torch.Tensor] = []
    shared = torch.zeros((), requires_grad=True) if grads and sink is not None else None

    def on_writer(slot: Slot) -> Callable[..., Any]:
        def fn(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
            s = to_stack(x, slot)
            new = writer_fn(slot, s) if writer_fn is not None else None
            if capture:
                captured.append((s if new is None else new).detach())
            return None if new is None else from_stack(new, slot).contiguous()

        return fn

    def on_reader(slot: Slot) -> Callable[..., Any]:
        def fn(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
            s = to_stack(x, slot)
            new = reader_fn(slot, s) if reader_fn is not None else None
            if shared is not None:   # streamed: one shared zero leaf, the gradient handed on at this tensor
                assert sink is not None
                new = (s if new is None else new) + shared.to(s.device, s.dtype)
                new.register_hook(lambda g, slot=slot: sink.grad(slot, g))
            elif grads:
                leaf = torch.zeros_like(s, requires_grad=True)
                leaves.append(leaf)
                new = (s if new is None else new) + leaf
            return None if new is None else from_stack(new, slot).contiguous()

        return fn

    b = handle.bridge
    norms = post_attention_norms(handle)
    pending: dict[tuple[int, str], torch.Tensor] = {}

    def keep(layer: int, what: str) -> Callable[..., Any]:
        def fn(x: torch.Tensor, hook: Any) -> None:
            pending[(layer, what)] = x

        return fn

    def on_shares(slot: Slot, norm: Any) -> Callable[..., Any]:
        """At the post-attention norm's output: the heads' residual shares are the writers."""
        share_fn = on_writer(slot)

        def fn(y: torch.Tensor, hook: Any) -> torch.Tensor | None:
            result = pending.pop((slot.layer, "result"))  # [batch, pos, H, d]
            gain = norm_gain(norm, pending.pop((slot.layer, "scale"))).to(result.dtype)
            shares = result * gain.unsqueeze(2)
            new = share_fn(shares, hook)
            return None if new is None else y + (new - shares).sum(2)

        return fn

    hooks: list[tuple[str, Callable[..., Any]]] = []
    for s in wslots:
        if norms is not None and s.kind == "heads":
            hooks += [(s.name, keep(s.layer, "result")), (f"blocks.{s.layer}.ln1_post.hook_scale", keep(s.layer, "scale")),
                      (f"blocks.{s.layer}.ln1_post.hook_out", on_shares(s, norms[s.layer]))]
        else:
            hooks.append((s.name, on_writer(s)))
    hooks += [(s.name, on_reader(s)) for s in rslots]
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    unembed_last = "unembed.hook_in" in b.hook_dict
    if unembed_last:  # unembed only the positions the metric reads: with 262k-token vocabularies (Gemma 3)
        # the logits at every position would be most of the cost of a pass
        hooks.append(("unembed.hook_in", lambda x, hook: x[rows, last.to(x.device)].unsqueeze(1)))
    with installed(b, hooks), torch.set_grad_enabled(grads):
        logits = b(tokens)
        ll = logits[:, 0] if unembed_last else logits[rows, last.to(logits.device)]
        out = RunOut(ll.detach())
        if metric is not None:
            m = metric(ll)
            out.metric = float(m.detach())
            if shared is not None:
                assert sink is not None
                sink.writers_ready(torch.cat(captured, 0) if capture else None)
                captured.clear()
                torch.autograd.grad(m, [shared], allow_unused=True)
            elif grads:
                g = torch.autograd.grad(m, leaves, allow_unused=True)
                out.grads = [torch.zeros_like(leaf) if gi is None else gi for gi, leaf in zip(g, leaves, strict=True)]
    if capture and captured:
        out.writers = torch.cat(captured, 0)
    return out


class EdgePatcher:
    """Edge ablation in one forward pass: each reader's input becomes
    ``input − Σ_{upstream writers w whose edge to it is not kept} (a_w − a_w^corr)``, where ``a_w`` is
    the writer's output in this same pass and ``a_w^corr`` its corrupted value.

    With every edge kept this is the unpatched run; with none kept every reader sees the corrupted
    residual (for counterfactual corruption, exactly the corrupt run's residual).
    """

    def __init__(
        self,
        lay: Layout,
        keep: Bool[torch.Tensor, "writers readers"],
        corr: Float[torch.Tensor, "writers b s d_model"],
        shape: tuple[int, int, int],
    ) -> None:
        self.keep = keep
        self.corr = corr
        self.delta = torch.zeros(len(lay.writers), *shape, dtype=corr.dtype, device=corr.device)
        self.total = torch.zeros(shape, dtype=corr.dtype, device=corr.device)
        self.n = 0

    def writer(self, slot: Slot, s: torch.Tensor) -> None:
        d = s - self.corr[slot.start : slot.start + slot.count]
        self.delta[slot.start : slot.start + slot.count] = d
        self.total = self.total + d.sum(0)
        self.n = slot.start + slot.count
        return None

    def reader(self, slot: Slot, s: torch.Tensor) -> torch.Tensor | None:
        kp = self.keep[: self.n, slot.start : slot.start + slot.count]
        if bool(kp.all()):
            return None
        kept_rows = kp.any(1).nonzero().flatten()
        drop = ~kp
        drop_rows = drop.any(1).nonzero().flatten()
        if len(drop_rows) <= len(kept_rows):
            dropped = torch.einsum("wbsd,wc->cbsd", self.delta[drop_rows], drop[drop_rows].to(s.dtype))
        else:
            kept = torch.einsum("wbsd,wc->cbsd", self.delta[kept_rows], kp[kept_rows].to(s.dtype))
            dropped = self.total[None] - kept
        return s - dropped
