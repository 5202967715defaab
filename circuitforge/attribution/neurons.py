"""Attribution at neuron resolution: every attention head and every MLP neuron ``m{L}.n{I}``.

A neuron's activation is its input to the down projection, ``a = act(gate·x) · (up·x)`` for gated
(Llama) MLPs and ``act(W_in·x + b)`` for GPT-2 (``blocks.L.mlp.hook_post``, ``[batch, pos, d_mlp]``).
A head's activation is its ``hook_z`` (``[batch, pos, H, d_head]``; its output ``z·W_O`` is linear in it,
so ``Δz·∂M/∂z = Δresult·∂M/∂result``). Scores (denoising sign convention, as in
:func:`circuitforge.attribution.attribute`):

    EAP     (Syed et al. 2023):   score(u) = Σ_{row, pos} (a_u^clean − a_u^corr) · ∂M/∂a_u |corrupt run
    EAP-IG  (Hanna et al. 2024):  the gradient averaged over ``ig_steps`` points (midpoint rule) on the
                                   straight path from the corrupt to the clean input embedding
    exact   (activation patching): score(u) = M(corrupt run with a_u set to its clean value at every
                                   position) − M(corrupt run)

Positive = restoring the unit's clean activation pushes the metric toward the clean answer. Scores are
task means (rows weighted equally). Counterfactual corruption only (every row needs a corrupt prompt of
the same token length). Padded positions carry no gradient (right padding, causal attention).

Cost: EAP 2 forward + 1 backward passes; EAP-IG 2 forward + ``ig_steps`` forward/backward passes; exact
one forward per unit (several units share a pass by stacking copies of the batch).
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from circuitforge.attribution import common as C
from circuitforge.attribution import hooks as H
from circuitforge.attribution.corruption import PromptBatch, encode_task
from circuitforge.attribution.metrics import MetricFn, prime, resolve
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.models.weights import parse_node

FORMAT = "circuitforge.neurons/1"
METHODS = ("eap", "eap-ig", "exact")
MAX_ROWS = 64  # rows per stacked forward pass of exact patching


def _z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _post(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


@dataclass(eq=False)
class NeuronGraph:
    """Scores of every head and every MLP neuron of one model on one task.

    Attributes:
        head_scores: ``[n_layers, n_heads]`` score of query head ``a{L}.h{H}`` (NaN: not measured).
        neuron_scores: ``[n_layers, d_mlp]`` score of neuron ``m{L}.n{I}`` (NaN: not measured).
        method, settings, model, task, clean_metric, corrupt_metric: as in :class:`~circuitforge.attribution.Graph`.
    """

    head_scores: Float[torch.Tensor, "layers heads"]
    neuron_scores: Float[torch.Tensor, "layers d_mlp"]
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    clean_metric: float | None = None
    corrupt_metric: float | None = None

    @property
    def n_layers(self) -> int:
        return int(self.neuron_scores.shape[0])

    def units(self) -> list[str]:
        """Every unit id, heads first (``a{L}.h{H}``), then neurons (``m{L}.n{I}``), layer-major."""
        L, Hh = self.head_scores.shape
        D = self.neuron_scores.shape[1]
        return [f"a{layer}.h{h}" for layer in range(L) for h in range(Hh)] + [
            f"m{layer}.n{i}" for layer in range(L) for i in range(D)]

    def flat(self) -> Float[torch.Tensor, " units"]:
        """Scores in the order of :meth:`units`."""
        return torch.cat([self.head_scores.flatten(), self.neuron_scores.flatten()])

    def score(self, unit: str) -> float:
        kind, layer, idx = parse_node(unit)
        if kind == "head":
            return float(self.head_scores[layer, idx])
        if kind == "neuron":
            return float(self.neuron_scores[layer, idx])
        raise CircuitForgeError(f"{unit!r} is not a head (a{{L}}.h{{H}}) or neuron (m{{L}}.n{{I}}) id")

    def per_layer(self) -> list[dict[str, Any]]:
        """Per layer: summed head and neuron scores, summed |score|, and the top neurons by |score| —
        the readable view of a model with thousands of neurons per layer."""
        out = []
        for layer in range(self.n_layers):
            ns = self.neuron_scores[layer]
            ok = ~ns.isnan()
            v = torch.where(ok, ns, torch.zeros_like(ns))
            top = torch.topk(v.abs(), min(5, int(ok.sum()))).indices.tolist() if bool(ok.any()) else []
            hs = torch.nan_to_num(self.head_scores[layer])
            out.append({"layer": layer, "heads_sum": float(hs.sum()), "heads_abs_sum": float(hs.abs().sum()),
                        "neurons_sum": float(v.sum()), "neurons_abs_sum": float(v.abs().sum()),
                        "top_neurons": [{"id": f"m{layer}.n{i}", "score": float(v[i])} for i in top]})
        return out

    def to_dict(self, top: int = 200) -> dict[str, Any]:
        """JSON view: per-layer aggregates, every head, and the ``top`` neurons by |score| (the dense
        ``[layers, d_mlp]`` matrix is left out to keep the file readable; use ``torch.save`` for it)."""
        s = self.neuron_scores.flatten()
        ok = ~s.isnan()
        D = self.neuron_scores.shape[1]
        idx = torch.topk(torch.where(ok, s.abs(), torch.tensor(-1.0)), min(top, int(ok.sum()))).indices.tolist()
        return {
            "format": FORMAT, "model": self.model, "task": self.task, "method": {"name": self.method, **self.settings},
            "clean_metric": self.clean_metric, "corrupt_metric": self.corrupt_metric,
            "per_layer": self.per_layer(),
            "heads": [{"id": f"a{L}.h{h}", "score": None if v != v else float(v)}
                      for L, row in enumerate(self.head_scores.tolist()) for h, v in enumerate(row)],
            "top_neurons": [{"id": f"m{i // D}.n{i % D}", "score": float(s[i])} for i in idx],
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, top: int = 200) -> str:
        text = json.dumps(self.to_dict(top), indent=1)
        if path is not None:
            from circuitforge._provenance import write_text_atomic

            write_text_atomic(path, text + "\n")
        return text


def attribute_neurons(
    handle: ModelHandle,
    task: Task,
    metric: str | MetricFn | None = "logit_diff",
    method: str = "eap",
    *,
    ig_steps: int = 5,
    units: Sequence[str] | None = None,
    batch_size: int | None = 32,
) -> NeuronGraph:
    """Scores of every head and MLP neuron (module docstring) with ``method`` ``"eap"``, ``"eap-ig"``
    or ``"exact"`` (activation patching of ``units`` only — ids ``a{L}.h{H}`` / ``m{L}.n{I}``; the
    others are NaN). Counterfactual corruption; ``metric`` as in :func:`~circuitforge.attribution.attribute`."""
    import time

    from circuitforge.attribution.api import model_block, task_block

    if method not in METHODS:
        raise CircuitForgeError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if method == "exact" and units is None:
        raise CircuitForgeError("exact neuron patching needs the units to measure (one forward pass each)")
    if ig_steps < 1:
        raise CircuitForgeError(f"ig_steps must be >= 1, not {ig_steps}")
    metric_name, fn = resolve(metric)
    batch = encode_task(handle, task, "counterfactual")
    t0 = time.perf_counter()
    if method == "exact":
        assert units is not None
        heads, neurons, clean_m, corr_m = _exact(handle, batch, fn, list(units), batch_size)
    else:
        heads, neurons, clean_m, corr_m = _gradient(handle, batch, fn, ig_steps if method == "eap-ig" else 0, batch_size)
    settings: dict[str, Any] = {"corruption": "counterfactual", "metric": metric_name,
                                "seconds": round(time.perf_counter() - t0, 4)}
    if method == "eap-ig":
        settings["ig_steps"] = ig_steps
    return NeuronGraph(heads, neurons, method, settings, model_block(handle), task_block(task), clean_m, corr_m)


def _capture(store: dict[str, torch.Tensor], name: str) -> Any:
    def fn(x: torch.Tensor, hook: Any) -> None:
        store[name] = x.detach().clone()

    return fn


def _gradient(handle: ModelHandle, batch: PromptBatch, metric: MetricFn, ig_steps: int,
              batch_size: int | None) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """EAP (``ig_steps == 0``: gradient on the corrupt run) or EAP-IG (input-embedding interpolation)."""
    L = handle.n_layers
    names = [_z(layer) for layer in range(L)] + [_post(layer) for layer in range(L)]
    emb = "blocks.0.hook_resid_pre"
    heads = torch.zeros(L, handle.n_heads, dtype=torch.float64)
    neurons = torch.zeros(L, handle.d_mlp, dtype=torch.float64)
    clean_m = corr_m = 0.0
    b = handle.bridge
    with H.prepared(handle, flags=False):
        for ch in C.chunks(batch, metric, batch_size):
            sub = ch.batch
            assert sub.corrupt is not None
            rows = torch.arange(len(sub))
            clean: dict[str, torch.Tensor] = {}
            corr: dict[str, torch.Tensor] = {}
            with torch.no_grad(), H.installed(b, [(n, _capture(clean, n)) for n in [*names, emb]]):
                cl = b(sub.clean)[rows, sub.last]
            prime(metric, cl)
            with torch.no_grad(), H.installed(b, [(n, _capture(corr, n)) for n in [*names, emb]]):
                cr = b(sub.corrupt)[rows, sub.last]
            clean_m += ch.weight * float(ch.metric(cl))
            corr_m += ch.weight * float(ch.metric(cr))
            points = [(sub.corrupt, None)] if ig_steps == 0 else [
                (sub.clean, (k + 0.5) / ig_steps) for k in range(ig_steps)]
            total: dict[str, torch.Tensor] = {n: torch.zeros_like(clean[n]) for n in names}
            for tokens, alpha in points:
                leaves: dict[str, torch.Tensor] = {}

                def leaf(n: str, lv: dict[str, torch.Tensor] = leaves) -> Any:
                    def fn(x: torch.Tensor, hook: Any) -> torch.Tensor:
                        lv[n] = torch.zeros_like(x, requires_grad=True)
                        return x + lv[n]

                    return fn

                hooks = [(n, leaf(n)) for n in names]
                if alpha is not None:
                    target = corr[emb] + alpha * (clean[emb] - corr[emb])
                    hooks.insert(0, (emb, lambda x, hook, t=target: t.to(x.dtype)))
                with torch.enable_grad(), H.installed(b, hooks):
                    m = ch.metric(b(tokens)[rows, sub.last])
                    grads = torch.autograd.grad(m, [leaves[n] for n in names], allow_unused=True)
                for n, g in zip(names, grads, strict=True):
                    if g is not None:
                        total[n] += g.detach()
            scale = ch.weight / len(points)
            for layer in range(L):
                z, p = _z(layer), _post(layer)
                heads[layer] += scale * ((clean[z] - corr[z]) * total[z]).double().sum((0, 1, 3))
                neurons[layer] += scale * ((clean[p] - corr[p]) * total[p]).double().sum((0, 1))
    return heads.float(), neurons.float(), clean_m, corr_m


def _exact(handle: ModelHandle, batch: PromptBatch, metric: MetricFn, units: list[str],
           batch_size: int | None) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Denoising activation patching of each unit (module docstring)."""
    L = handle.n_layers
    targets: list[tuple[str, int, int]] = []
    for u in units:
        kind, layer, idx = parse_node(u)
        if kind not in ("head", "neuron") or idx is None:
            raise CircuitForgeError(f"{u!r} is not a head (a{{L}}.h{{H}}) or neuron (m{{L}}.n{{I}}) id")
        limit = handle.n_heads if kind == "head" else handle.d_mlp
        if layer >= L or idx >= limit:
            raise CircuitForgeError(f"{u!r} is out of range for this model")
        targets.append((kind, layer, idx))
    heads = torch.full((L, handle.n_heads), float("nan"), dtype=torch.float64)
    neurons = torch.full((L, handle.d_mlp), float("nan"), dtype=torch.float64)
    vals = torch.zeros(len(targets), dtype=torch.float64)
    names = [_z(layer) for layer in range(L)] + [_post(layer) for layer in range(L)]
    clean_m = corr_m = 0.0
    b = handle.bridge
    with H.prepared(handle, flags=False), torch.no_grad():
        for ch in C.chunks(batch, metric, batch_size):
            sub = ch.batch
            assert sub.corrupt is not None
            B = len(sub)
            rows = torch.arange(B)
            clean: dict[str, torch.Tensor] = {}
            with H.installed(b, [(n, _capture(clean, n)) for n in names]):
                cl = b(sub.clean)[rows, sub.last]
            prime(metric, cl)
            base = float(ch.metric(b(sub.corrupt)[rows, sub.last]))
            clean_m += ch.weight * float(ch.metric(cl))
            corr_m += ch.weight * base
            k = max(1, MAX_ROWS // B)
            for start in range(0, len(targets), k):
                group = targets[start : start + k]

                def patch(kind: str, layer: int, grp: list[tuple[str, int, int]] = group,
                          clean: dict[str, torch.Tensor] = clean, B: int = B) -> Any:
                    hits = [(j, idx) for j, (kd, ly, idx) in enumerate(grp) if kd == kind and ly == layer]

                    def fn(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
                        if not hits:
                            return None
                        x = x.clone()
                        src = clean[_z(layer) if kind == "head" else _post(layer)]
                        for j, idx in hits:
                            x[j * B : (j + 1) * B, :, idx] = src[:, :, idx]
                        return x

                    return fn

                hooks = [(_z(ly), patch("head", ly)) for ly in {t[1] for t in group if t[0] == "head"}]
                hooks += [(_post(ly), patch("neuron", ly)) for ly in {t[1] for t in group if t[0] == "neuron"}]
                n = len(group)
                with H.installed(b, hooks):
                    ll = b(sub.corrupt.repeat(n, 1))[torch.arange(n * B), sub.last.repeat(n)]
                ms = C.per_copy_metric(metric, sub, ll)
                vals[start : start + n] += ch.weight * (torch.tensor(ms, dtype=torch.float64) - base)
    for (kind, layer, idx), v in zip(targets, vals.tolist(), strict=True):
        (heads if kind == "head" else neurons)[layer, idx] = v
    return heads.float(), neurons.float(), clean_m, corr_m
