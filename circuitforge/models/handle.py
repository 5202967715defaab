"""The thin model handle: a TransformerLens 4 ``TransformerBridge`` plus identity and architecture facts.

No algorithm lives here. Algorithms are free functions in the pipeline packages that take a handle.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int

Family = Literal["llama", "gpt2"]


def _strip(name: str) -> str:
    return name.replace("._original_component", "")


@dataclass(eq=False)
class ModelHandle:
    """A loaded model.

    Attributes:
        bridge: the TransformerLens 4 ``TransformerBridge`` (eval mode after loading).
        spec: the spec string it was loaded from (``"smollm2-135m"``, a folder, a ``.gguf`` file...).
        family: the parameter layout: ``"llama"`` (HF names ``model.layers.L.self_attn.{q,k,v,o}_proj`` and
            ``mlp.{gate,up,down}_proj``; gated MLP, RMSNorm, RoPE, possibly grouped-query attention: Llama,
            Qwen2, Gemma 3) or ``"gpt2"``.
        n_layers, n_heads, n_kv_heads, d_head, d_model, d_mlp, d_vocab: architecture facts. For models
            without grouped-query attention ``n_kv_heads == n_heads``. Query head ``h`` reads KV head
            ``h // (n_heads // n_kv_heads)`` (HuggingFace ``repeat_kv`` order).
        source_dir: the HF checkpoint folder the weights came from, when there is one.
        model_type: the HF ``config.model_type`` (``"llama"``, ``"qwen2"``, ``"gemma3_text"``, ``"gpt2"``).
    """

    bridge: Any = field(repr=False, kw_only=False)
    spec: str
    family: Family
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_mlp: int
    d_vocab: int
    source_dir: str | None = None
    model_type: str | None = None
    _sha256: str | None = field(default=None, repr=False)
    _canonical: list[str] | None = field(default=None, repr=False)

    # -- plain accessors -------------------------------------------------------------------------
    @property
    def hf(self) -> Any:
        """The wrapped HuggingFace model (its module tree is rewritten by the bridge)."""
        return self.bridge.original_model

    @property
    def tokenizer(self) -> Any:
        return self.bridge.tokenizer

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    def canonical_names(self) -> list[str]:
        """The parameter/buffer names a plain HF model of this config has (no bridge aliases)."""
        if self._canonical is None:
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(self.hf.config)
            self._canonical = list(skeleton.state_dict().keys())
        return self._canonical

    def named_parameters(self) -> dict[str, torch.nn.Parameter]:
        """HF parameter names (as in a saved checkpoint) → live parameters.

        Bridge aliases (``attn.q``, ``mlp.in``...) are dropped; tied parameters appear once (the first
        canonical name, e.g. the embedding rather than ``lm_head``).
        """
        canonical = set(self.canonical_names())
        by_name: dict[str, torch.nn.Parameter] = {}
        for name, p in self.hf.named_parameters(remove_duplicate=False):
            by_name.setdefault(_strip(name), p)
        out: dict[str, torch.nn.Parameter] = {}
        seen: set[int] = set()
        for name in self.canonical_names():
            param = by_name.get(name)
            if param is None or id(param) in seen or name not in canonical:
                continue
            seen.add(id(param))
            out[name] = param
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """HF-keyed state dict of the live weights, canonical names only (what :func:`save` writes)."""
        raw = {_strip(k): v for k, v in self.hf.state_dict().items()}
        return {k: raw[k] for k in self.canonical_names() if k in raw}

    # -- identity --------------------------------------------------------------------------------
    @property
    def sha256(self) -> str:
        """sha256 over the weights (sorted HF names, dtype, shape, bytes). Cached; call
        :meth:`invalidate_identity` after editing weights in place."""
        if self._sha256 is None:
            h = hashlib.sha256()
            sd = self.state_dict()
            for k in sorted(sd):
                t = sd[k].detach().to("cpu").contiguous()
                h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._sha256 = h.hexdigest()
        return self._sha256

    def invalidate_identity(self) -> None:
        self._sha256 = None

    def identity(self) -> dict[str, str]:
        """``{"spec": ..., "sha256": ...}`` as recorded in every JSON report."""
        return {"spec": self.spec, "sha256": self.sha256, "family": self.family}

    def architecture(self) -> dict[str, int | str]:
        return {
            "family": self.family,
            "model_type": self.model_type or self.family,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "d_head": self.d_head,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
            "d_vocab": self.d_vocab,
        }

    # -- running ---------------------------------------------------------------------------------
    def to_tokens(self, text: str | list[str], prepend_bos: bool | None = None) -> Int[torch.Tensor, "batch pos"]:
        """Token ids. ``prepend_bos=None`` follows the model's convention (the bridge's
        ``cfg.default_prepend_bos``): a BOS for Llama, GPT-2 and Gemma 3, none for Qwen2, which has no BOS
        token and degrades when given one (``<|endoftext|>``)."""
        if prepend_bos is None:
            prepend_bos = bool(getattr(self.bridge.cfg, "default_prepend_bos", True))
        return self.bridge.to_tokens(text, prepend_bos=prepend_bos)

    def logits(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos vocab"]:
        """Plain forward pass (no hooks), in whatever grad mode the caller is in."""
        return self.bridge(tokens)

    def logits_at(self, tokens: Int[torch.Tensor, "batch pos"], at: Int[torch.Tensor, "batch k"],
                  hooks: list[tuple[str, Any]] | None = None,
                  attention_mask: Bool[torch.Tensor, "batch 1 pos pos"] | None = None,
                  position_ids: Int[torch.Tensor, "batch pos"] | None = None) -> Float[torch.Tensor, "batch k vocab"]:
        """Forward pass on ``tokens`` (with bridge ``hooks``) returning the logits at positions ``at[j]`` of
        row ``j`` only. Only those positions are unembedded (with a 262k-token vocabulary the unembedding
        is most of a forward pass; the final norm is per position, so the values equal the full logits
        read there). ``attention_mask`` (True = may attend) and ``position_ids``, when given, replace the
        causal mask and the positions ``0..pos-1`` (packed scoring, :mod:`circuitforge.data.packing`)."""
        b = self.bridge
        rows = torch.arange(tokens.shape[0], device=self.device)[:, None]
        at = at.to(self.device)
        hooks = list(hooks or [])
        pick = "unembed.hook_in" in b.hook_dict
        if pick:
            hooks.append(("unembed.hook_in", lambda x, hook: x[rows, at]))
        kw: dict[str, Any] = {}
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask.to(self.device)
        if position_ids is not None:
            kw["position_ids"] = position_ids.to(self.device)
        with b.hooks(fwd_hooks=hooks):
            out = b(tokens.to(self.device), **kw)
        return out if pick else out[rows, at]

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' floating dtype (float32 unless loaded with ``dtype=``)."""
        return next(self.hf.parameters()).dtype
