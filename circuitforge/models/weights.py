"""Map a component node id to the exact parameter slices that implement it.

Node ids (``docs/design.md``): ``a{L}.h{H}`` (query head: its W_Q rows and W_O columns),
``a{L}.kv{G}`` (KV head G: its W_K and W_V rows; under grouped-query attention it serves query heads
``G*g .. G*g+g-1`` with ``g = n_heads // n_kv_heads``; for GPT-2 G = H), ``m{L}`` (the whole MLP),
``m{L}.n{I}`` (neuron I: its gate/up rows and down column; GPT-2: c_fc column, bias entry, c_proj row).

Llama-layout weights (Llama, Qwen2, Gemma 3) are ``nn.Linear`` ``[out, in]``; GPT-2 weights are ``Conv1D``
``[in, out]``. Slices are ``d_head`` wide, which need not be ``d_model / n_heads`` (Gemma 3 270M: 256 vs 160).
Per-head biases belong to their head (Qwen2: a head's rows of the q bias, a KV head's rows of the k and v
biases). Shared parameters belong to no single component and are not included: the ``o_proj``/``c_proj``
bias, and Gemma 3's q/k-norm gains (one ``d_head`` vector applied to every head) and its norms.
"""

import re
from dataclasses import dataclass

import torch

from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle

_NODE = re.compile(r"^(?:a(?P<al>\d+)\.(?:h(?P<h>\d+)|kv(?P<kv>\d+))|m(?P<ml>\d+)(?:\.n(?P<n>\d+))?)$")


@dataclass(frozen=True)
class ParamSlice:
    """One slice of one parameter: ``param.data[index]`` is a writable view.

    Attributes:
        name: HF parameter name (``model.layers.3.self_attn.q_proj.weight``).
        param: the live parameter.
        index: a tuple of slices/ints selecting the component's part of ``param``.
    """

    name: str
    param: torch.nn.Parameter
    index: tuple[slice | int, ...]

    @property
    def view(self) -> torch.Tensor:
        """Writable view of the slice (no autograd history)."""
        return self.param.data[self.index]

    def mask(self) -> torch.Tensor:
        """Boolean mask of ``param``'s shape, True on the slice."""
        m = torch.zeros(self.param.shape, dtype=torch.bool)
        m[self.index] = True
        return m

    @property
    def numel(self) -> int:
        return self.view.numel()


def parse_node(node: str) -> tuple[str, int, int | None]:
    """``"a3.h1"`` → ``("head", 3, 1)``, ``"a3.kv0"`` → ``("kv", 3, 0)``, ``"m2"`` → ``("mlp", 2, None)``,
    ``"m2.n7"`` → ``("neuron", 2, 7)``."""
    m = _NODE.match(node)
    if not m:
        raise CircuitForgeError(f"{node!r} is not a component node id (a{{L}}.h{{H}}, a{{L}}.kv{{G}}, m{{L}}, m{{L}}.n{{I}})")
    if m["al"] is not None:
        layer = int(m["al"])
        return ("head", layer, int(m["h"])) if m["h"] is not None else ("kv", layer, int(m["kv"]))
    layer = int(m["ml"])
    return ("neuron", layer, int(m["n"])) if m["n"] is not None else ("mlp", layer, None)


def _prefix(handle: ModelHandle, layer: int) -> str:
    return f"model.layers.{layer}" if handle.family == "llama" else f"transformer.h.{layer}"


def component_params(handle: ModelHandle, node: str,
                     params: dict[str, torch.nn.Parameter] | None = None) -> list[ParamSlice]:
    """The parameter slices of component ``node`` (see module docstring), as writable views.

    ``params``: ``handle.named_parameters()`` computed once by a caller that asks for many components
    (walking the bridge's modules costs ≈ 50 ms; a neuron circuit has thousands of components).

    Zeroing every slice of ``a{L}.h{H}`` zeroes that head's contribution (equivalent to zeroing its
    ``hook_z``); zeroing ``m{L}.n{I}``'s down column zeroes the neuron's output.
    """
    kind, layer, idx = parse_node(node)
    if layer >= handle.n_layers:
        raise CircuitForgeError(f"{node}: layer {layer} out of range (model has {handle.n_layers})")
    limits = {"head": handle.n_heads, "kv": handle.n_kv_heads, "neuron": handle.d_mlp}
    if idx is not None and idx >= limits[kind]:
        raise CircuitForgeError(f"{node}: index {idx} out of range (< {limits[kind]})")
    params = handle.named_parameters() if params is None else params
    pre = _prefix(handle, layer)
    dh, d = handle.d_head, handle.d_model

    def ps(name: str, *index: slice | int) -> ParamSlice:
        full = f"{pre}.{name}"
        return ParamSlice(full, params[full], tuple(index))

    full = slice(None)
    if handle.family == "llama":
        if kind == "head":
            rows = slice(idx * dh, (idx + 1) * dh)  # type: ignore[operator]
            out = [ps("self_attn.q_proj.weight", rows, full), ps("self_attn.o_proj.weight", full, rows)]
            if f"{pre}.self_attn.q_proj.bias" in params:
                out.append(ps("self_attn.q_proj.bias", rows))
            return out
        if kind == "kv":
            rows = slice(idx * dh, (idx + 1) * dh)  # type: ignore[operator]
            out = [ps("self_attn.k_proj.weight", rows, full), ps("self_attn.v_proj.weight", rows, full)]
            for b in ("k_proj", "v_proj"):
                if f"{pre}.self_attn.{b}.bias" in params:
                    out.append(ps(f"self_attn.{b}.bias", rows))
            return out
        if kind == "mlp":
            return [ps(f"mlp.{n}_proj.weight", full, full) for n in ("gate", "up", "down")]
        return [ps("mlp.gate_proj.weight", idx, full), ps("mlp.up_proj.weight", idx, full), ps("mlp.down_proj.weight", full, idx)]  # type: ignore[arg-type]
    # GPT-2: c_attn [d, 3d] columns are [Q | K | V]; c_proj [d, d] rows are per head.
    if kind == "head":
        cols = slice(idx * dh, (idx + 1) * dh)  # type: ignore[operator]
        return [ps("attn.c_attn.weight", full, cols), ps("attn.c_attn.bias", cols), ps("attn.c_proj.weight", cols, full)]
    if kind == "kv":
        k = slice(d + idx * dh, d + (idx + 1) * dh)  # type: ignore[operator]
        v = slice(2 * d + idx * dh, 2 * d + (idx + 1) * dh)  # type: ignore[operator]
        return [ps("attn.c_attn.weight", full, k), ps("attn.c_attn.bias", k), ps("attn.c_attn.weight", full, v), ps("attn.c_attn.bias", v)]
    if kind == "mlp":
        return [ps(n, *([full] * params[f"{pre}.{n}"].dim())) for n in ("mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")]
    return [ps("mlp.c_fc.weight", full, idx), ps("mlp.c_fc.bias", idx), ps("mlp.c_proj.weight", idx, full)]  # type: ignore[arg-type]


def linear_weight_count(handle: ModelHandle) -> int:
    """Number of weights in the blocks' 2-D matrices (attention and MLP projections; embeddings, norms and
    biases excluded): the denominator of every "share of linear weights" the toolkit reports."""
    prefix = ("model.layers.", "transformer.h.")
    return sum(p.numel() for n, p in handle.named_parameters().items()
               if n.startswith(prefix) and n.endswith(".weight") and p.dim() == 2)
