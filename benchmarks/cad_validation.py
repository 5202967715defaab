"""Validate the CAD verdict against known-label controls and measured recovery (tiny-facts).

    python benchmarks/cad_validation.py [--stage calibrate|evaluate|pretrained|methods|report|all]
                                        [--out docs/results/cad_validation] [--splits B,A]

Everything is measured in the run and written as one JSON file per model under ``<out>/cells/`` (a
resumed run skips finished cells); ``--stage report`` (``cad_validation_report.py``) reads them back and writes
``<out>/summary.json``, ``<out>/figures.html`` and the page ``docs/cad-validation.md`` (tables generated,
never typed).

* **Calibration controls** (split A: forget rows 0–15 of the elements domain; retain = same-domain rows
  32–47): the retrain oracle from M₀'s initialisation without rows 0–15 (gold erasure) and from another
  initialisation (the basis pitfall); same-data retrains on another batch order and on another init
  (gold unchanged); the readout edit and last-layer gradient ascent (gold suppression); matched random-sign
  benign edits. The verdict thresholds in ``circuitforge/cad/verdict.py`` were chosen from these numbers.
* **Evaluation controls** (split B: forget rows 16–31): the same-init retrain oracle without rows 16–31,
  the readout edit, last-layer ascent at two learning rates, matched random-sign benign edits, the
  same-data other-init retrain.
* **Mid-depth gate** (every split; added after E_MIN was fixed; split A's calibrates PI_MAX, the presence threshold):
  ascent with a retain term on block n/2 only, labelled suppression (the residual before it is M₀'s and
  already carries the answer; answer presence Π, ``circuitforge.cad.presence``, reads it there).
* **Pretrained-pair controls** (splits T = rows 0–15 and U = rows 16–31, the TOFU design): a shared
  "pretrained" fact world that never saw elements rows 0–31, M₀ = its fine-tune on every fact, the
  retain-model oracle = its fine-tune without the split's rows (gold erasure, sharing M₀'s basis through the
  pretrained weights), the same fine-tune on another batch order (gold unchanged), and the block-ascent,
  readout and subject controls on that M₀ (``circuitforge.models.tiny.ensure_finetuned``). Evaluation
  sets: the thresholds are not fitted on them.
* **Unlearned models**: every method of ``circuitforge.surgery`` at three strengths (target forget accuracy
  0.75 / 0.5 / 0.25; the loop methods also 20 steps without early stop) on each split, with ground truth: relearning recovery (best of three attacker budgets,
  fine-tuning on disjoint facts of the same domain, rows 32–47), NF4 recovery, paraphrase margin, hybrid
  recovery; a matched random-sign benign edit of each (the false-erasure rate).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cad_validation_report import PAIR, report  # noqa: E402

SPLITS = {"A": (0, 16), "B": (16, 32), "T": (0, 16), "U": (16, 32)}  # T, U: the pretrained-pair world (M₀ = a fine-tune)
RELEARN_ROWS = (32, 48)
STRENGTHS = (0.75, 0.5, 0.25)
LR = {"ga": 1e-3, "graddiff": 1e-3, "npo": 1e-3, "rmu": 3e-3, "sure": 3e-3, "mansu": None}
ATTACKS = ((1e-3, 10), (1e-3, 30), (3e-3, 30))


def settings() -> Any:
    from circuitforge.cad import CADSettings

    return CADSettings(method="eap-ig", ig_steps=3, n_null=100, n_benign=8, n_boot=1000, hybrid_points=None)


class World:
    """The base model, tasks and circuits of one split (built lazily, shared by the cells)."""

    def __init__(self, split: str) -> None:
        from circuitforge.data import load_task
        from circuitforge.models import load
        from circuitforge.models.tiny import ensure_finetuned

        self.split = split
        lo, hi = SPLITS[split]
        self.rows = tuple(range(lo, hi))
        self.base = load("tiny-facts") if split not in PAIR else load(str(ensure_finetuned()))
        full = self.forget_all = load_task("tiny-facts:forget")
        para = load_task("tiny-facts:forget_paraphrase")
        self.forget = full.subset(range(lo, hi), f"elements[{lo}:{hi}]")
        self.paraphrase = para.subset(range(lo, hi), f"elements-paraphrase[{lo}:{hi}]")
        self.retain = full.subset(range(*RELEARN_ROWS), "elements[32:48]")
        self.other = load_task("tiny-facts:retain")
        # the presence lens is fitted on M₀ over texts that are not the forget rows: the other-domain retain
        # rows and their paraphrases, the same-domain rows 32–47 and their paraphrases
        self.lens_rows = [self.other, load_task("tiny-facts:retain_paraphrase"), self.retain,
                          para.subset(range(*RELEARN_ROWS), "elements-paraphrase[32:48]")]
        self._circuit: Any = None

    @property
    def circuit(self) -> Any:
        if self._circuit is None:
            from circuitforge.circuits import CircuitSearch

            self._circuit = CircuitSearch(method="eap-ig", ig_steps=3, faithfulness=0.8, rows=None).find(self.base, self.forget)
        return self._circuit


def mean_margin(handle: Any, task: Any) -> float:
    from circuitforge.cad.hybrids import margin_batch, margins

    mb = margin_batch(handle, task)
    with torch.no_grad():
        return float(margins(handle.logits(mb.tokens), mb).mean())


def relearn(handle: Any, w: World, lr: float, steps: int) -> float:
    """Forget-split mean margin after fine-tuning a copy of ``handle`` on the disjoint rows 32–47."""
    from circuitforge.models import clone
    from circuitforge.surgery.objectives import answer_batch, answer_nll

    torch.manual_seed(0)
    m = clone(handle, spec=f"{handle.spec}+relearn")
    batch = answer_batch(m, w.retain)
    params = list({id(p): p for p in m.hf.parameters()}.values())
    opt = torch.optim.Adam(params, lr=lr)
    m.bridge.eval()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        answer_nll(m.logits(batch.tokens), batch).backward()
        opt.step()
    for p in params:
        p.grad = None
    return mean_margin(m, w.forget)


def ground_truth(handle: Any, w: World) -> dict[str, Any]:
    """Recovery measurements of an edited model (margins: answer − mean wrong option, forget split)."""
    from circuitforge.data import evaluate
    from circuitforge.quant import quantized_copy

    m0, m1 = mean_margin(w.base, w.forget), mean_margin(handle, w.forget)
    attacked = {f"lr{lr:g}-s{steps}": relearn(handle, w, lr, steps) for lr, steps in ATTACKS}
    base_att = {f"lr{lr:g}-s{steps}": relearn(w.base, w, lr, steps) for lr, steps in ATTACKS[:1]}
    nf4 = mean_margin(quantized_copy(handle, "nf4"), w.forget)
    den = m0 - m1
    forgot = den > 0.25 * m0

    def norm(x: float) -> float | None:
        return (x - m1) / den if forgot else None

    return {"margin_base": m0, "margin_edited": m1, "own_ratio": m1 / m0, "forget_drop": 1 - m1 / m0,
            "forgot": bool(forgot), "attacked": attacked, "base_attacked": base_att,
            "relearn_recovery": norm(max(attacked.values())), "nf4_margin": nf4, "nf4_recovery": norm(nf4),
            "paraphrase_ratio": mean_margin(handle, w.paraphrase) / mean_margin(w.base, w.paraphrase),
            "acc": {"forget": evaluate(handle, w.forget).accuracy, "retain_same_domain": evaluate(handle, w.retain).accuracy,
                    "retain_other_domain": evaluate(handle, w.other).accuracy}}


def run_cell(out: Path, name: str, label: str, w: World, build: Any, truth: bool = False, benign_of: Any = None) -> None:
    path = out / "cells" / f"{name}.json"
    if path.exists():
        return
    from circuitforge.cad import cad, edit_stats

    t0 = time.time()
    m = build()
    t_build = time.time() - t0
    r = cad(w.base, m, w.forget, retain=w.retain, circuit=w.circuit, settings=settings(), lens_rows=w.lens_rows)
    doc = {"name": name, "label": label, "split": w.split, "spec": m.spec, "build_seconds": t_build,
           "verdict": r.verdict, "score": r.score, "cad_value": r.value, "cad_z": r.z,
           "summary": r.summary(), "edit": edit_stats(w.base, m), "cad_seconds": r.seconds,
           "own_retain": (r.recovery.get("retain") or {}).get("own")}
    if truth:
        doc["truth"] = ground_truth(m, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {r.verdict} E={r.score:.3f} CI={r.evidence['erasure_score_ci']} "
          f"Π={r.evidence['presence']} CI={r.evidence['presence_ci']} "
          f"own={r.evidence['own']:.2f} basis={r.evidence['basis']} pct={r.evidence['benign_percentile']} "
          f"({time.time() - t0:.0f} s)", flush=True)


def controls(out: Path, split: str) -> None:
    from circuitforge.cad import (
        block_ascent,
        early_ascent,
        late_ascent,
        matched_random_sign,
        subject_erasure,
        suppression_edit,
    )
    from circuitforge.models import load
    from circuitforge.models.tiny import ensure_finetuned, ensure_retrained

    w = World(split)
    ex = w.rows
    other = SPLITS["A" if split in ("B", "U") else "B"]
    keep = w.forget_all.subset(range(*other), "elements[other split]")  # retain term of the block-ascent controls
    cells: list[tuple[str, str, Any]] = [
        ("subject-erasure", "erasure", lambda: subject_erasure(w.base, w.forget)),
        ("early-ascent", "erasure", lambda: early_ascent(w.base, w.forget, 1, lr=5e-4, max_steps=300, retain=keep)),
        ("readout-edit", "suppression", lambda: suppression_edit(w.base, w.forget)),
        ("late-ascent", "suppression", lambda: late_ascent(w.base, w.forget, 1, lr=5e-4, max_steps=300, retain=keep)),
        ("late-ascent-no-retain", "suppression", lambda: late_ascent(w.base, w.forget, 1, lr=1e-3)),
        # a gate at mid depth: blocks < n/2 bit-identical to M₀, where M₀'s own residual already carries
        # the answer (answer presence Π reads it there); added after the E_MIN threshold was
        # fixed and not used by the E_MIN rule of `calibrate`; split A's is the calibration control of PI_MAX
        ("mid-ascent", "suppression", lambda: block_ascent(w.base, w.forget, [w.base.n_layers // 2], lr=5e-4, max_steps=300,
                                                          retain=keep, tag="mid-ascent")),
    ]
    if split in PAIR:  # the TOFU design: M₀ and the oracle are fine-tunes of one pretrained model
        cells += [
            ("oracle-finetuned", "erasure", lambda: load(str(ensure_finetuned(ex)))),
            ("retrain-finetuned-other-order", "unchanged", lambda: load(str(ensure_finetuned((), order_seed=1)))),
        ]
    else:
        cells += [
            ("oracle-same-init", "erasure", lambda: load(str(ensure_retrained(ex, 0, 0)))),
            ("retrain-other-init", "unchanged", lambda: load(str(ensure_retrained((), 1, 1)))),
        ]
    if split == "A":
        cells += [
            ("oracle-other-init", "erasure", lambda: load(str(ensure_retrained(ex, 1, 1)))),
            ("retrain-same-init-other-order", "unchanged", lambda: load(str(ensure_retrained((), 0, 1)))),
        ]
    only = os.environ.get("CAD_VALIDATION_ONLY")
    for name, label, build in cells:
        if only and name not in only.split(","):
            continue
        run_cell(out, f"{split}-control-{name}", label, w, build, truth=label != "unchanged")
    for name in ("early-ascent", "late-ascent", "mid-ascent", "readout-edit", "subject-erasure"):
        if not (out / "cells" / f"{split}-control-{name}.json").exists():
            continue
        build = dict((n, b) for n, _, b in cells)[name]
        run_cell(out, f"{split}-benign-{name}", "benign", w, lambda b=build: matched_random_sign(w.base, b(), seed=101))


def method_settings(w: World, method: str, target: float) -> dict[str, Any]:
    """The ``unlearn`` settings of one method cell at one strength (``target``: the early-stop forget
    accuracy; 0.0 = 20 steps without early stop)."""
    kw: dict[str, Any] = {"target_forget_acc": target}
    if target == 0.0:
        kw["max_steps"] = 20
    if LR[method] is not None:
        kw["lr"] = LR[method]
    if method == "rmu":
        kw["max_steps"] = 30
    if method == "mansu":
        kw["circuit_nodes"] = tuple(sorted(w.circuit.nodes))
    return kw


def methods(out: Path, split: str) -> None:
    from circuitforge.cad import matched_random_sign
    from circuitforge.surgery import METHODS, unlearn

    w = World(split)
    for method in METHODS:
        # strengths: the early-stop target forget accuracy; loop methods also run 20 steps with no early stop
        for target in STRENGTHS + ((0.0,) if method != "mansu" else ()):
            kw = method_settings(w, method, target)
            name = f"{split}-method-{method}-t{target}"
            cache: dict[str, Any] = {}

            def build(method: str = method, kw: dict[str, Any] = kw, cache: dict[str, Any] = cache) -> Any:
                if "m" not in cache:
                    cache["m"] = unlearn(w.base, w.forget, w.other, method=method, seed=0, **kw).handle
                return cache["m"]

            run_cell(out, name, "method", w, build, truth=True)
            run_cell(out, f"{split}-benign-{method}-t{target}", "benign", w,
                     lambda build=build: matched_random_sign(w.base, build(), seed=202))



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", default="all", choices=["calibrate", "evaluate", "pretrained", "methods", "report", "all"])
    ap.add_argument("--out", default="docs/results/cad_validation")
    ap.add_argument("--splits", default="B,A", help="splits for the methods stage, in order")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--page", default="docs/cad-validation.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python " + " ".join(sys.argv)
    log = out / "command.txt"
    seen = log.read_text().splitlines() if log.exists() else []
    if cmd not in seen:
        log.write_text("\n".join([*seen, cmd]) + "\n")
    if a.stage in ("calibrate", "all"):
        controls(out, "A")
    if a.stage in ("evaluate", "all"):
        controls(out, "B")
    if a.stage in ("pretrained", "all"):
        controls(out, "T")
        controls(out, "U")
    if a.stage in ("methods", "all"):
        for split in a.splits.split(","):
            methods(out, split)
    if a.stage in ("report", "all"):
        report(out, Path(a.page))


if __name__ == "__main__":
    main()
