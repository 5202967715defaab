"""RMU — Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark", §5).

At a chosen layer ℓ, with ``h_θ(x)`` the residual stream after block ℓ (``blocks.ℓ.hook_resid_post``)
at every non-pad token:

* forget: ``L_f = mean ‖h_θ(x_f) − c·u‖²`` — steer forget activations toward a fixed random direction
  ``u`` (uniform ``[0, 1)^d``, normalised; drawn from ``seed``) scaled by the steering coefficient ``c``;
* retain: ``L_r = mean ‖h_θ(x_r) − h_ref(x_r)‖²`` — keep retain activations where the frozen input
  model puts them;
* ``L = L_f + α · L_r``; means are over tokens and hidden dimensions (``F.mse_loss``), as in the WMDP code.

**The BOS position** (``skip_bos``, off by default): position 0's residual depends on the BOS token alone,
so it is the *same vector* in every forget and retain row; the forget loss asks to move it to ``c·u`` and
the retain loss to keep it. It is also an attention sink with an outsized norm (SmolLM2-135M at layer 4:
≈ 800 against ≈ 80–110 at the other positions), which inflates ``c`` (layer 7: 1.45×). ``skip_bos=True``
leaves it out of both losses and of the norm that sets ``c``. Measured on the SmolLM2 benchmark's
calibration split (layer 7, scale 20, lr 1e-3): the same forget / retain / same-domain accuracies
(0.22 / 0.98 / 0.35) with and without it, so the default keeps WMDP's all-token loss.

Only the MLP down-projections of layers ``ℓ−n+1 .. ℓ`` train (WMDP: layers 5, 6, 7 of Zephyr-7B, the
``down_proj`` weights, steering at layer 7). Defaults: ``layer = n_layers // 4`` (7 of 30 on SmolLM2, as
7 of 32 in WMDP), three layers, WMDP's lr 5e-5. ``c``: WMDP tunes it per model (6.5 for Zephyr); when
``steering_coeff`` is None we use ``steering_scale`` × the mean activation norm at layer ℓ on the
forget rows, so the target is ``steering_scale`` times farther out than typical activations whatever
the model's scale. Early-stopped at ``target_forget_acc`` like the other baselines.

WMDP's lr is too small for the short cloze rows and 60 steps here: on SmolLM2-135M (benchmark
calibration split, layer 10, scale 20) the forget MSE went 16,593 → 16,524 in 60 steps and forget accuracy
stayed at 0.81 (0.93 with ``skip_bos``), while lr 1e-3 at layer 7 reached 0.22 in 25 steps. The benchmark sweeps lr with the layer and
the scale (``benchmarks/unlearning.toml``) rather than change the default.
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
    skip_bos: bool = False

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


def loss_positions(handle: ModelHandle, valid: torch.Tensor, skip_bos: bool) -> torch.Tensor:
    """The positions RMU's losses read: ``valid`` (non-pad) without position 0 when ``skip_bos`` and the
    model's tokens start with a BOS (see module docstring)."""
    out = valid.clone()
    if skip_bos and bool(getattr(handle.bridge.cfg, "default_prepend_bos", True)):
        out[:, 0] = False
    return out


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
                m = loss_positions(handle, b.valid, s.skip_bos).to(handle.device)
                norms.append(activations(handle, layer, b.tokens)[m].norm(dim=-1).cpu())
            coeff = s.steering_scale * float(torch.cat(norms).mean())
    else:
        coeff = s.steering_coeff
    control = (coeff * u).to(handle.device)
    layers = list(range(max(0, layer - s.n_layers_updated + 1), layer + 1))
    params = {n: r.edited.named_parameters()[n] for n in down_proj_names(r.edited, layers)}
    fb, rb = shuffled_batches(len(forget), s.batch_size, g), shuffled_batches(len(retain), s.batch_size, g)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        bf, br = answer_batch(r.edited, forget, next(fb)), answer_batch(r.edited, retain, next(rb))
        lf = _masked_mse(activations(r.edited, layer, bf.tokens), control, loss_positions(handle, bf.valid, s.skip_bos))
        with torch.no_grad():
            ref = activations(handle, layer, br.tokens)
        lr = _masked_mse(activations(r.edited, layer, br.tokens), ref, loss_positions(handle, br.valid, s.skip_bos))
        return lf + s.retain_weight * lr, {"forget_mse": float(lf.detach()), "retain_mse": float(lr.detach())}

    hist, why = gradient_loop(r.edited, params, loss_fn, s, forget)
    diag = {"layer": layer, "updated": list(params), "steering_coeff": coeff}
    return r.finish("rmu", s, seed, forget, retain, hist, why, diagnostics=diag)
