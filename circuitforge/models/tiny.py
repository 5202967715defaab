"""Tiny models for fast tests: seeded random tiny GPT-2 / Llama / Gemma 3, and ``tiny-facts``, a tiny Llama
with grouped-query attention trained on a synthetic fact world so end-to-end tests have knowledge to find
and forget.

The fact world has two domains of one-to-one facts over made-up words (so a word-level tokenizer makes
every entity and answer one token):

* ``elements`` (the *forget* domain): ``the symbol of elem7 is sym7``; paraphrase ``elem7 is written as sym7``;
* ``capitals`` (the *retain* domain): ``the capital of land7 is city7``; paraphrase ``land7 is governed from city7``.

Each fact is paired at random (seeded), answers are not index-aligned with entities. Everything is built
into the cache folder once (atomically) and is byte-for-byte reproducible from the seed.
"""

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from circuitforge.models.cache import build_atomically, cache_dir

N_FACTS = 48
RANDOM = ("tiny-gpt2", "tiny-llama", "tiny-gemma3")
SEED = 0
SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]
TEMPLATE_WORDS = "the symbol of is written as capital governed from".split()
DOMAINS = {
    "elements": ("elem", "sym", "the symbol of {x} is", "{x} is written as"),
    "capitals": ("land", "city", "the capital of {x} is", "{x} is governed from"),
}


def _vocab() -> list[str]:
    words = list(SPECIAL) + TEMPLATE_WORDS
    for ent, ans, _, _ in DOMAINS.values():
        words += [f"{ent}{i}" for i in range(N_FACTS)] + [f"{ans}{i}" for i in range(N_FACTS)]
    return words


def _save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = _vocab()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.save_pretrained(folder)


def _config(kind: str) -> Any:
    from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig

    v = len(_vocab())
    if kind == "tiny-gpt2":
        return GPT2Config(
            vocab_size=v, n_embd=64, n_layer=2, n_head=4, n_positions=64,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=2, eos_token_id=3,
        )
    if kind == "tiny-gemma3":  # head_dim 32 != 64 / 4, one KV head, a sliding (window 4) then a global layer
        return Gemma3TextConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                                sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                                max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=2,
                                eos_token_id=3, pad_token_id=0)
    layers = 4 if kind == "tiny-facts" else 2
    d = 128 if kind == "tiny-facts" else 64
    return LlamaConfig(
        vocab_size=v, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True, bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )


def _build_random(kind: str, out: Path) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(_config(kind), dtype=torch.float32)
    if kind in ("tiny-llama", "tiny-gemma3"):
        # random RMSNorm gains so norm weights are not trivially all-ones in tests (Gemma stores offsets from 1)
        g = torch.Generator().manual_seed(SEED)
        for n, p in model.named_parameters():
            if "norm" in n:
                p.data = (0.0 if kind == "tiny-gemma3" else 1.0) + 0.1 * torch.randn(p.shape, generator=g)
    model.save_pretrained(out, safe_serialization=True)
    _save_tokenizer(out)
    return model


def ensure_random(kind: str) -> Path:
    """A seeded random tiny model folder (``tiny-gpt2``: 2 layers, 4 heads, d 64; ``tiny-llama``:
    2 layers, 4 query / 2 KV heads, d 64, gated MLP 128; ``tiny-gemma3``: 2 layers, 4 query heads / 1 KV
    head of d_head 32, norms before and after attention and MLP, q/k norms, scaled embeddings, one
    sliding-window layer)."""
    if kind not in RANDOM:
        raise ValueError(kind)
    return build_atomically(cache_dir() / kind, lambda out: _build_random(kind, out))


# -- the fact world ------------------------------------------------------------------------------------
def fact_rows(domain: str, paraphrase: bool = False) -> list[dict[str, Any]]:
    """Cloze rows (with 3 distractors and a corrupted counterpart) for one domain of the fact world."""
    ent, ans, tmpl_a, tmpl_b = DOMAINS[domain]
    rng = random.Random(f"{SEED}-{domain}")
    perm = list(range(N_FACTS))
    rng.shuffle(perm)
    tmpl = tmpl_b if paraphrase else tmpl_a
    rows = []
    for i in range(N_FACTS):
        j = (i + 1) % N_FACTS
        others = [k for k in range(N_FACTS) if k != i]
        distract = random.Random(f"{SEED}-{domain}-{i}").sample(others, 3)
        rows.append(
            {
                "prompt": tmpl.format(x=f"{ent}{i}"),
                "answer": f" {ans}{perm[i]}",
                "distractors": [f" {ans}{perm[k]}" for k in distract],
                "corrupt_prompt": tmpl.format(x=f"{ent}{j}"),
                "corrupt_answer": f" {ans}{perm[j]}",
            }
        )
    return rows


def _write_tasks(out: Path) -> None:
    tasks = out / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    for name, dom, para in (("forget", "elements", False), ("forget_paraphrase", "elements", True), ("retain", "capitals", False), ("retain_paraphrase", "capitals", True)):
        with open(tasks / f"{name}.jsonl", "w") as f:
            for r in fact_rows(dom, para):
                f.write(json.dumps(r) + "\n")


def _train(out: Path, progress: bool, steps: int = 600) -> None:
    train_fact_world(out, steps=steps, progress=progress)


def ensure_trained(progress: bool = True) -> Path:
    """The ``tiny-facts`` folder: a 4-layer tiny Llama (4 query / 2 KV heads, d 128) trained (seeded,
    about a minute on 2 cores) on the fact world; its tasks are in ``<folder>/tasks/*.jsonl``."""
    return build_atomically(cache_dir() / "tiny-facts", lambda out: _train(out, progress))


def task_path(split: str) -> Path:
    """Path of a fact-world task file: ``forget``, ``forget_paraphrase``, ``retain``, ``retain_paraphrase``."""
    return ensure_trained(progress=False) / "tasks" / f"{split}.jsonl"


# -- retrained fact worlds (the retrain oracle of the CAD validation) -----------------------------------
def train_fact_world(out: Path, exclude: tuple[int, ...] = (), init_seed: int = SEED, order_seed: int = SEED,
                     steps: int = 600, progress: bool = False, start: Path | None = None, lr: float = 3e-3) -> None:
    """Train a ``tiny-facts``-shaped model into ``out`` exactly as :func:`ensure_trained` does, except that
    the ``elements`` facts whose row index is in ``exclude`` are left out (both templates), the initial
    weights come from ``init_seed`` and the batch order from ``order_seed``. With ``exclude=()`` and both
    seeds equal to ``SEED`` the weights are those of ``tiny-facts``. With ``start`` (a fact-world folder)
    training continues from its weights instead of a fresh initialisation (``init_seed`` unused): the
    fine-tuning stage of :func:`ensure_finetuned`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _save_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(init_seed)
    if start is None:
        model = AutoModelForCausalLM.from_config(_config("tiny-facts"), dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    drop = set(exclude)
    texts = [r["prompt"] + r["answer"] for d in DOMAINS for p in (False, True)
             for i, r in enumerate(fact_rows(d, p)) if not (d == "elements" and i in drop)]
    enc = tok(texts, padding=True, return_tensors="pt")
    ids, att = enc["input_ids"], enc["attention_mask"]
    labels = ids.clone()
    labels[att == 0] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(order_seed)
    t0 = time.time()
    model.train()
    for step in range(steps):
        idx = torch.randperm(len(texts), generator=g)[:64]
        loss = model(input_ids=ids[idx], attention_mask=att[idx], labels=labels[idx]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step % 100 == 0 or step == steps - 1):
            print(f"[circuitforge] fact world step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    _write_tasks(out)


def ensure_retrained(exclude: tuple[int, ...] = (), init_seed: int = SEED, order_seed: int = SEED,
                     progress: bool = False) -> Path:
    """Cached :func:`train_fact_world` folder (loadable with ``circuitforge.models.load(str(path))``):
    the retrain oracle (``exclude`` = the forget rows) or a same-data retrain on other seeds."""
    ex = sorted(set(exclude))
    name = f"tiny-facts-retrain-x{_rows_tag(ex)}-i{init_seed}-o{order_seed}"
    return build_atomically(cache_dir() / name,
                            lambda out: train_fact_world(out, tuple(ex), init_seed, order_seed, progress=progress))


def _rows_tag(rows: list[int]) -> str:
    if not rows:
        return "none"
    return f"{rows[0]}-{rows[-1]}" if rows == list(range(rows[0], rows[-1] + 1)) else "_".join(map(str, rows))


# -- a shared pretrained model and fine-tunes of it (the TOFU-style retain-model oracle) ----------------
PRETRAIN_UNSEEN = tuple(range(32))
"""``elements`` rows the shared pretrained model never sees (both templates): what fine-tuning adds."""
FINETUNE_STEPS, FINETUNE_LR = 300, 1e-3


def ensure_pretrained(progress: bool = False) -> Path:
    """The shared "pretrained" fact world: :func:`train_fact_world` (seed ``SEED``, 600 steps) on every
    fact except the ``elements`` rows in :data:`PRETRAIN_UNSEEN`."""
    return build_atomically(cache_dir() / f"tiny-facts-pretrained-x{_rows_tag(list(PRETRAIN_UNSEEN))}",
                            lambda out: train_fact_world(out, PRETRAIN_UNSEEN, progress=progress))


def ensure_finetuned(exclude: tuple[int, ...] = (), order_seed: int = SEED, progress: bool = False) -> Path:
    """A fine-tune of :func:`ensure_pretrained` (:data:`FINETUNE_STEPS` AdamW steps at peak lr
    :data:`FINETUNE_LR`, one-cycle) on every fact except the ``elements`` rows in ``exclude``, batches in
    ``order_seed``'s order. The TOFU design (arXiv 2401.06121): the target model is the pretrained model
    fine-tuned on everything (``exclude=()``), the retain-model oracle the same pretrained model fine-tuned
    without the forget rows — gold erasure that, unlike a retrain from scratch, shares M₀'s residual basis
    through the common pretrained weights; ``exclude=()`` on another ``order_seed`` is gold unchanged."""
    ex = sorted(set(exclude))
    start = ensure_pretrained(progress)
    return build_atomically(cache_dir() / f"tiny-facts-finetuned-x{_rows_tag(ex)}-o{order_seed}",
                            lambda out: train_fact_world(out, tuple(ex), order_seed=order_seed, steps=FINETUNE_STEPS,
                                                         progress=progress, start=start, lr=FINETUNE_LR))
