"""Make a tiny model act linearly (test helper, not a test): norms become affine (no rescaling),
attention patterns are frozen to uniform causal averages, MLP activations become the identity on the
linear branch (GPT-2: MLP outputs zeroed). Returns an undo function."""

import types

import torch


def linearise(handle):
    b = handle.bridge
    added, store, saved = [], {}, []

    def add(name, fn):
        hp = b.hook_dict[name]
        added.append((hp, hp.add_hook(fn, dir="fwd", is_permanent=True)))

    norms = [b.ln_final.original_component]
    for L in range(handle.n_layers):
        norms += [b.blocks[L].ln1.original_component, b.blocks[L].ln2.original_component]
    for m in norms:
        saved.append((m, m.__dict__.get("forward")))
        if isinstance(m, torch.nn.LayerNorm):
            m.forward = types.MethodType(lambda self, x: (x - x.mean(-1, keepdim=True)) * self.weight + self.bias, m)
        else:
            m.forward = types.MethodType(lambda self, x: x * self.weight, m)

    def pattern(x, hook):
        s = x.shape[-1]
        tri = torch.tril(torch.ones(s, s))
        return (tri / tri.sum(-1, keepdim=True)).expand_as(x).clone()

    for name in list(b.hook_dict):  # the bridge's own norm path (used without split q/k/v inputs)
        if name.endswith("hook_scale"):
            add(name, lambda x, hook: torch.ones_like(x))
    for L in range(handle.n_layers):
        add(f"blocks.{L}.attn.hook_pattern", pattern)
        if handle.family == "llama":
            add(f"blocks.{L}.mlp.hook_pre_linear", lambda x, hook, key=L: store.__setitem__(key, x))
            add(f"blocks.{L}.mlp.hook_post", lambda x, hook, key=L: store[key])
        else:
            with torch.no_grad():
                b.blocks[L].mlp.original_component.c_proj.weight.zero_()

    def undo():
        for hp, h in added:
            h.hook.remove()
            if h in hp.fwd_hooks:
                hp.fwd_hooks.remove(h)
        for m, fwd in saved:
            if fwd is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = fwd

    return undo
