"""RMU — Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark", §5).

At a chosen layer ℓ, with ``h_θ(x)`` the residual stream after block ℓ (``blocks.ℓ.hook_resid_post``)
at every non-pad token:

* forget: ``L_f = mean ‖h_θ(x_f) − c·u‖²`` — steer forget activations toward a fixed random direction
  ``u`` (uniform ``[0, 1)^d``, normalised; drawn from ``seed``) scaled by the steering coefficient ``c``;
* retain: ``L_r = mean ‖h_θ(x_r) − h_ref(x_r)‖²`` — keep retain activations where the frozen input
  model puts them;
* ``L = L_f + α · L_r``; means are over tokens and hidden dimensions (``F.mse_loss``), as in the WMDP code.

Only the MLP down-projections of layers ``ℓ−n+1 .. ℓ`` train (WMDP: layers 5, 6, 7 of Zephyr-7B, the
``down_proj`` weights, steering at layer 7). Defaults: ``layer = n_layers // 4`` (7 of 30 on SmolLM2, as
7 of 32 in WMDP), three layers, WMDP's lr 5e-5. ``c``: WMDP tunes it per model (6.5 for Zephyr); when
``steering_coeff`` is None we use ``steering_scale`` × the mean activation norm at layer ℓ on the
forget rows, so the target is ``steering_scale`` times farther out than typical activations whatever
the model's scale. Early-stopped at ``target_forget_acc`` like the other baselines.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from circuitforge.data import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.surgery._common import (
    LoopSettings,
    Run,
    check,
    gradient_loop,
    make_settings,
)
from circuitforge.surgery.objectives import answer_batch, row_chunks, shuffled_batches
from circuitforge.surgery.result import UnlearnResult


@dataclass(frozen=True)
class RMUSettings(LoopSettings):
    """RMU settings (see module docstring). ``retain_weight`` is α; ``n_layers_updated`` the number of
    down-projections trained, ending at ``layer``."""

    lr: float = 5e-5
    layer: int | None = None
    n_layers_updated: int = 3
    steering_coeff: float | None = None
    steering_scale: float = 4.0
    retain_weight: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.layer is None or self.layer >= 0, "layer must be ≥ 0")
        check(self.n_layers_updated >= 1, "n_layers_updated must be ≥ 1")
        check(self.steering_coeff is None or self.steering_coeff > 0, "steering_coeff must be > 0")
        check(self.steering_scale > 0, "steering_scale must be > 0")
        check(self.retain_weight >= 0, "retain_weight must be ≥ 0")


Settings = RMUSettings


@contextlib.contextmanager
def _capture(handle: ModelHandle, layer: int, store: dict[str, torch.Tensor]) -> Iterator[None]:
    def fn(x: torch.Tensor, hook: Any) -> None:
        store["h"] = x

    with handle.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", fn)]):
        yield


def activations(
    handle: ModelHandle, layer: int, tokens: Int[torch.Tensor, "seq pos"]
) -> Float[torch.Tensor, "seq pos d_model"]:
    """Residual stream after block ``layer`` (in the caller's grad mode)."""
    store: dict[str, torch.Tensor] = {}
    with _capture(handle, layer, store):
        handle.logits(tokens.to(handle.device))
    return store["h"]


def down_proj_names(handle: ModelHandle, layers: list[int]) -> list[str]:
    """HF names of the MLP output projections of ``layers``."""
    fmt = "model.layers.{}.mlp.down_proj.weight" if handle.family == "llama" else "transformer.h.{}.mlp.c_proj.weight"
    return [fmt.format(i) for i in layers]


def _masked_mse(h: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    m = valid.to(h.device)
    return F.mse_loss(h[m], target.expand_as(h)[m])


def run(handle: ModelHandle, forget: Task, retain: Task, *, seed: int = 0, **settings: Any) -> UnlearnResult:
    """RMU on ``forget`` / ``retain``. See the module docstring."""
    s = make_settings(RMUSettings, **settings)
    layer = handle.n_layers // 4 if s.layer is None else s.layer
    if layer >= handle.n_layers:
        raise CircuitForgeError(f"rmu: layer {layer} out of range (model has {handle.n_layers})")
    r = Run.start(handle)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(handle.d_model, generator=g)
    u = u / u.norm()
    if s.steering_coeff is None:
        with torch.no_grad():
            norms = []
            for rows in row_chunks(len(forget), 16):
                b = answer_batch(handle, forget, rows)
                norms.append(activations(handle, layer, b.tokens)[b.valid.to(handle.device)].norm(dim=-1).cpu())
            coeff = s.steering_scale * float(torch.cat(norms).mean())
    else:
        coeff = s.steering_coeff
    control = (coeff * u).to(handle.device)
    layers = list(range(max(0, layer - s.n_layers_updated + 1), layer + 1))
    params = {n: r.edited.named_parameters()[n] for n in down_proj_names(r.edited, layers)}
    fb, rb = shuffled_batches(len(forget), s.batch_size, g), shuffled_batches(len(retain), s.batch_size, g)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        bf, br = answer_batch(r.edited, forget, next(fb)), answer_batch(r.edited, retain, next(rb))
        lf = _masked_mse(activations(r.edited, layer, bf.tokens), control, bf.valid)
        with torch.no_grad():
            ref = activations(handle, layer, br.tokens)
        lr = _masked_mse(activations(r.edited, layer, br.tokens), ref, br.valid)
        return lf + s.retain_weight * lr, {"forget_mse": float(lf.detach()), "retain_mse": float(lr.detach())}

    hist, why = gradient_loop(r.edited, params, loss_fn, s, forget)
    diag = {"layer": layer, "updated": list(params), "steering_coeff": coeff}
    return r.finish("rmu", s, seed, forget, retain, hist, why, diagnostics=diag)
