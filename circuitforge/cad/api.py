"""Circuit Attribution Divergence (CAD) and the erasure/suppression verdict, validated against recovery.

Given a base model M₀, an edited model M₁, the forget task (cloze rows with corrupt counterparts) and,
for specificity, retain rows (ideally untargeted facts of the same domain):

1. **Recovery evidence** (:mod:`.hybrids`, :mod:`.recovery`): layer hybrids ``H_L`` (M₁'s layers < L,
   then M₀'s layers ≥ L and M₀'s readout), recovery ``R_L`` = hybrid forget margin ÷ M₀'s, on forget and
   retain rows, with paired bootstrap 95% CIs; the erasure score ``E`` (share of depth at which the
   forget answer is missing from M₁'s residual beyond what retain rows lose) and the basis check; and the
   reverse hybrids ``H'_L`` (M₀'s layers < L, then M₁'s), whose suppression share ``S`` says from how deep
   M₁'s own later computation removes an answer handed to it intact (evidence, not read by the verdict).
2. **Benign null** (:mod:`.benign`): ``n_benign`` random-sign edits of M₀ matched to M₁ − M₀ in ‖Δθ‖ and
   in the number of weights changed (per tensor), and — given ``unrelated`` rows — ``n_benign_finetune``
   fine-tunes on them matched the same way (:func:`~circuitforge.cad.benign.matched_finetune`); the
   observed ``E``'s percentile among all of theirs.
3. **Answer presence** (:mod:`.presence`): a linear lens fitted on M₀'s residual (on rows that are not
   the forget rows) reads how much of the answer M₀ writes at the interior layers M₁ still writes there
   (``Π``, bootstrap CI): a gate after the answer was computed keeps ``Π`` high, an erasure does not.
4. **Verdict** (:mod:`.verdict`): ``erasure | suppression | unchanged | indeterminate`` from the evidence
   above, with thresholds fixed on known-label controls before evaluation.
5. **The paper's CAD** (evidence, not the verdict; ``settings.attribution``): C = the base circuit
   (``circuit``, else found with ``search``); per-example attribution of C's edges on M₀ (``s₀``), on M₁
   (``s_beh``, own readout) and on M₁ read through M₀'s final norm and unembedding (``s_mech``);
   CAD = Σ|ā₁ − ā₀| / Σ|ā₀| over C's edges (upstream edges for ``s_mech``) with the split-half
   M₀-vs-M₀ prompt-resampling null and its z (:mod:`.divergence`). ``value``/``z`` are this CAD.
"""

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float

from circuitforge._provenance import versions, write_json_atomic
from circuitforge.cad.benign import edit_stats, matched_finetune, matched_random_sign, percentile
from circuitforge.cad.controls import with_base_readout
from circuitforge.cad.divergence import NullCalibrated, calibrated_cad
from circuitforge.cad.hybrids import (
    HybridMargins,
    differing_parts,
    hybrid_layers,
    hybrid_margins,
    model_residuals,
)
from circuitforge.cad.presence import fit_base_lens, presence
from circuitforge.cad.recovery import recovery, reverse_recovery
from circuitforge.cad.verdict import Verdict, decide
from circuitforge.circuits import Circuit, CircuitSearch
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models import ModelHandle, parse_node

FORMAT = "circuitforge.cad/4"
FORMATS_READ = ("circuitforge.cad/1", "circuitforge.cad/2", "circuitforge.cad/3", FORMAT)


@dataclass(frozen=True)
class CADSettings:
    """Settings of :func:`cad`.

    Attributes:
        method, ig_steps, faithfulness: attribution method, IG steps and circuit faithfulness target of the
            paper's CAD (and of the default circuit search).
        n_null: prompt-resampling splits of the paper's CAD null.
        z_threshold: kept for the paper's CAD z (reported, no longer the verdict).
        late_layers: layers counted as the logit side of the paper's upstream CAD; None = max(1, round(n/5)).
        seed: seed of every resampling (bootstrap, null splits, benign edits).
        n_benign: matched random-sign benign edits in the null (0 = no benign null).
        n_benign_finetune: matched fine-tunes on unrelated rows in the null (only when :func:`cad` is given
            ``unrelated`` rows; :func:`~circuitforge.cad.benign.matched_finetune`).
        n_boot: bootstrap resamples for the recovery CIs.
        hybrid_points: how many hybrid layers L (evenly spaced over 0..n, ends included); None = all.
        attribution: also compute the paper's attribution CAD (three EAP(-IG) runs and the circuit).
        presence: measure answer presence Π with a lens fitted on M₀ (:mod:`.presence`; needs lens rows:
            the retain and unrelated rows, or ``lens_rows``); read by the verdict.
    """

    method: Literal["eap", "eap-ig"] = "eap-ig"
    ig_steps: int = 5
    faithfulness: float = 0.8
    n_null: int = 200
    z_threshold: float = 3.0
    late_layers: int | None = None
    seed: int = 0
    n_benign: int = 4
    n_benign_finetune: int = 1
    n_boot: int = 1000
    hybrid_points: int | None = 16
    attribution: bool = True
    presence: bool = True

    def __post_init__(self) -> None:
        if self.method not in ("eap", "eap-ig"):
            raise ValueError(f"method must be 'eap' or 'eap-ig', not {self.method!r}")
        if self.ig_steps < 1 or self.n_null < 10 or self.z_threshold <= 0 or not 0 < self.faithfulness <= 1:
            raise ValueError("ig_steps ≥ 1, n_null ≥ 10, z_threshold > 0 and 0 < faithfulness ≤ 1 required")
        if self.n_benign < 0 or self.n_benign_finetune < 0 or self.n_boot < 100 or (self.hybrid_points is not None and self.hybrid_points < 2):
            raise ValueError("n_benign ≥ 0, n_benign_finetune ≥ 0, n_boot ≥ 100 and hybrid_points ≥ 2 (or None) required")


def check_compatible(base: ModelHandle, edited: ModelHandle) -> None:
    """Refuse pairs whose architecture or tokenizer differ (CAD compares the same graph ids)."""
    if base.architecture() != edited.architecture():
        raise CircuitForgeError(f"architectures differ: {base.architecture()} vs {edited.architecture()}")
    if base.tokenizer.get_vocab() != edited.tokenizer.get_vocab():
        raise CircuitForgeError("tokenizers differ: the base and edited models must share one vocabulary")


def _layer(node: str) -> int:
    comp = node.split("<", 1)[0]
    if comp in ("input",):
        return -1
    if comp == "logits":
        return 10**9
    return parse_node(comp)[1]


_BASE_SCORES: dict[tuple[Any, ...], torch.Tensor] = {}
"""M₀'s per-example edge scores by (weights, rows, edges, method, IG steps): a bench split or a CI job
compares many edited models against one base circuit, whose base attribution is the same every time."""


def base_scores_key(base_sha256: str, task_sha256: str, edges: list[str], method: str, ig_steps: int) -> tuple[Any, ...]:
    """The key of M₀'s per-example edge scores: weights, rows, edges and attribution settings."""
    return (base_sha256, task_sha256, tuple(edges), method, int(ig_steps))


def known_base_scores() -> dict[tuple[Any, ...], torch.Tensor]:
    """M₀ per-example edge scores computed (or :func:`remember_base_scores`-ed) in this process, by key."""
    return {k: v.clone() for k, v in _BASE_SCORES.items()}


def remember_base_scores(key: tuple[Any, ...], scores: Float[torch.Tensor, "examples edges"]) -> None:
    """Store M₀'s per-example edge scores under ``key`` (:func:`base_scores_key`), e.g. read back from a
    :class:`circuitforge.eval.BaseReference` file, so :func:`base_edge_scores` does not recompute them."""
    if scores.ndim != 2 or scores.shape[1] != len(key[2]):
        raise CircuitForgeError(f"stored base edge scores have shape {tuple(scores.shape)}, expected (rows, {len(key[2])})")
    if len(_BASE_SCORES) >= 4 and key not in _BASE_SCORES:
        _BASE_SCORES.pop(next(iter(_BASE_SCORES)))
    _BASE_SCORES[key] = scores.float().clone()


def base_edge_scores(base: ModelHandle, task: Task, edges: list[str], settings: CADSettings) -> Float[torch.Tensor, "examples edges"]:
    """:func:`per_example_edge_scores` of the base model, memoised in-process (at most 4 entries) by
    :func:`base_scores_key` (the base's weight hash, the task's rows hash, the edges, the attribution settings)."""
    key = base_scores_key(base.sha256, task.sha256, edges, settings.method, settings.ig_steps)
    if key not in _BASE_SCORES:
        remember_base_scores(key, per_example_edge_scores(base, task, edges, settings))
    return _BASE_SCORES[key].clone()


def per_example_edge_scores(handle: ModelHandle, task: Task, edges: list[str], settings: CADSettings) -> Float[torch.Tensor, "examples edges"]:
    """Attribution of ``edges`` on each row of ``task`` (row i of the result = row i of the task), from one
    batched EAP / EAP-IG run with ``per_row=True``; metric: answer − corrupt answer logit difference."""
    from circuitforge.attribution import attribute

    g = attribute(handle, task, metric="logit_diff", method=settings.method, level="edge",
                  ig_steps=settings.ig_steps, per_row=True, edges=edges)
    rows = getattr(g, "row_edge_scores", None)
    if rows is None:
        raise CircuitForgeError("attribution did not return per-row edge scores")
    w, r = g.layout.edge_index(edges)
    return rows[:, w, r].float()


@dataclass
class CADResult:
    """CAD verdict and its evidence. ``to_dict`` gives the ``circuitforge.cad/4`` JSON (cad/3: the erasure score leaves out ``L = n``;
    cad/4: answer presence in ``recovery.presence`` and the verdict).

    ``verdict`` comes from the recovery evidence (``recovery``, ``benign``, ``evidence``); ``value`` and
    ``z`` are the paper's (upstream mechanistic) attribution CAD and its prompt-resampling z, kept as one
    piece of evidence (NaN when ``settings.attribution`` is off)."""

    verdict: Verdict
    value: float
    z: float
    behavioural: dict[str, Any]
    mechanistic: dict[str, Any]
    mechanistic_upstream: dict[str, Any]
    faithfulness_base: float | None
    faithfulness_edited: float | None
    edges: list[dict[str, Any]]
    layer_mass: dict[str, Any]
    circuit: dict[str, Any]
    settings: dict[str, Any]
    base: dict[str, Any]
    edited: dict[str, Any]
    task: dict[str, Any]
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=versions)
    recovery: dict[str, Any] = field(default_factory=dict)
    benign: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    retain_task: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: ``hybrids`` (M₁'s forward and reverse hybrids, M₀'s residuals), ``presence`` (the lens fit and readings), ``benign_random_sign``,
    ``benign_finetune`` (building the matched edits and their hybrids), ``attribution`` (the paper's CAD)."""

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CADResult":
        if d.get("format") not in FORMATS_READ:
            raise CircuitForgeError(f"not a {FORMAT} document")
        return cls(**{k: v for k, v in d.items() if k != "format"})

    def to_json(self, path: str) -> None:
        write_json_atomic(path, self.to_dict())

    @property
    def score(self) -> float:
        """The verdict's continuous score: the erasure score E (higher = more erased); NaN if unknown."""
        return float(self.evidence.get("erasure_score", float("nan")))

    def summary(self) -> dict[str, Any]:
        """The ``cad`` block of ``circuitforge verify``'s JSON: ``format`` (the evidence's version: verdicts of
        different formats are not comparable), ``value``/``z`` (the paper's CAD), ``verdict`` and the recovery
        evidence it was read from."""
        rec = self.recovery
        f = rec.get("forget") or {}
        r = rec.get("retain") or {}
        return {"format": FORMAT, "value": self.value, "z": self.z, "verdict": self.verdict,
                "behavioural_value": self.behavioural.get("value"), "behavioural_z": self.behavioural.get("z"),
                "faithfulness_edited": self.faithfulness_edited, "circuit_edges": len(self.edges),
                "rule": self.evidence.get("rule"), "erasure_score": self.evidence.get("erasure_score"),
                "erasure_score_ci": self.evidence.get("erasure_score_ci"), "basis": self.evidence.get("basis"),
                "own_forget_ratio": self.evidence.get("own"), "own_forget_ratio_ci": self.evidence.get("own_ci"),
                "own_retain_ratio": r.get("own"),
                "benign_percentile": self.evidence.get("benign_percentile"),
                "benign_erasure_scores": self.benign.get("erasure_scores"),
                "benign_finetune_erasure_scores": (self.benign.get("finetune") or {}).get("erasure_scores"),
                "hybrid_layers": f.get("layers"), "hybrid_recovery_forget": f.get("recovery"),
                "hybrid_recovery_forget_ci": f.get("recovery_ci"), "hybrid_recovery_retain": r.get("recovery"),
                "hybrid_recovery_retain_ci": r.get("recovery_ci"),
                "reverse_hybrid_recovery_forget": (rec.get("reverse") or {}).get("forget"),
                "suppression_share": (rec.get("reverse") or {}).get("suppression_share"),
                "suppression_share_ci": (rec.get("reverse") or {}).get("suppression_share_ci"),
                "presence": self.evidence.get("presence"), "presence_ci": self.evidence.get("presence_ci"),
                "presence_per_layer": (rec.get("presence") or {}).get("per_layer"),
                "thresholds": self.evidence.get("thresholds")}


def _calib_dict(c: NullCalibrated) -> dict[str, Any]:
    return {"value": c.value, "full": c.full, "z": c.z, "null_mean": c.null_mean, "null_std": c.null_std,
            "null": list(c.null)}


def recovery_evidence(base: ModelHandle, edited: ModelHandle, task: Task, retain: Task | None,
                      s: CADSettings, unrelated: Task | None = None,
                      lens_rows: list[Task] | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, float]]:
    """``(recovery, benign, evidence, timings)``: hybrid recovery curves with CIs (and, under ``presence``,
    the answer presence read with M₀'s lens fitted on ``lens_rows``, default the retain and unrelated
    rows), the matched benign null, the verdict with the numbers it was read from (see :mod:`.verdict`)
    and seconds per phase."""
    layers = hybrid_layers(base.n_layers, s.hybrid_points)
    t_start = time.time()
    # M₀'s residuals and margins once per task: the denominators of every recovery, and the lower half of
    # the reverse hybrids
    r0_f = model_residuals(base, task)
    r0_r = model_residuals(base, retain) if retain is not None else None

    def margins_of(m: ModelHandle, parts: frozenset[int] | None,
                   m_resid: Any = None) -> tuple[HybridMargins, HybridMargins | None]:
        f = hybrid_margins(base, m, task, layers, base_margins=r0_f.margins, parts=parts, edited_residuals=m_resid)
        r = (hybrid_margins(base, m, retain, layers, base_margins=r0_r.margins, parts=parts)
             if retain is not None and r0_r is not None else None)
        return f, r

    def rec(m: ModelHandle, n_boot: int) -> Any:
        return recovery(*margins_of(m, differing_parts(base, m)), n_boot=n_boot, seed=s.seed)

    parts = differing_parts(base, edited)
    r1_f = model_residuals(edited, task)   # M₁'s residuals on the forget rows: the hybrids and the presence lens read them
    hf, hr = margins_of(edited, parts, r1_f)
    obs = recovery(hf, hr, n_boot=s.n_boot, seed=s.seed)
    # reverse hybrids H'_L: M₁'s own margins (from the forward call) as the reverse "base", M₀'s residuals
    reverse = reverse_recovery(
        hybrid_margins(edited, base, task, layers, base_margins=hf.own, edited_residuals=r0_f, parts=parts),
        hybrid_margins(edited, base, retain, layers, base_margins=hr.own, edited_residuals=r0_r, parts=parts)
        if retain is not None and hr is not None else None,
        n_boot=s.n_boot, seed=s.seed)
    timings = {"hybrids": time.time() - t_start}
    pres: dict[str, Any] | None = None
    fit_rows = [t for t in (lens_rows if lens_rows is not None else [retain, unrelated]) if t is not None]
    if s.presence and fit_rows:
        t0 = time.time()
        pres = presence(base, edited, task, fit_base_lens(base, fit_rows), n_boot=s.n_boot, seed=s.seed,
                        resid=(r0_f.resid, r1_f.resid))
        timings["presence"] = time.time() - t0
    benign: dict[str, Any] = {"kind": "matched random-sign", "n": s.n_benign, "edit": edit_stats(base, edited),
                              "erasure_scores": [], "basis": [], "own_forget_ratio": []}
    t0 = time.time()
    for k in range(s.n_benign):
        b = rec(matched_random_sign(base, edited, seed=s.seed + 1 + k), 100)
        benign["erasure_scores"].append(b.erasure_score)
        benign["basis"].append(b.basis)
        benign["own_forget_ratio"].append(b.forget["own"])
    timings["benign_random_sign"] = time.time() - t0
    if unrelated is not None and s.n_benign_finetune:
        benign["kind"] = "matched random-sign and matched unrelated fine-tune"
        benign["finetune"] = {"n": s.n_benign_finetune, "task": unrelated.identity(), "erasure_scores": [],
                              "basis": [], "own_forget_ratio": []}
        for k in range(s.n_benign_finetune):
            b = rec(matched_finetune(base, edited, unrelated, seed=s.seed + 1 + k), 100)
            for key, v in (("erasure_scores", b.erasure_score), ("basis", b.basis), ("own_forget_ratio", b.forget["own"])):
                benign["finetune"][key].append(v)
    benign["seconds"] = time.time() - t0
    timings["benign_finetune"] = benign["seconds"] - timings["benign_random_sign"]
    null = benign["erasure_scores"] + benign.get("finetune", {}).get("erasure_scores", [])
    pct = percentile(obs.erasure_score, null) if null else None
    ev = decide(obs.forget["own"], obs.forget["own_ci"], obs.basis if retain is not None else None,
                obs.erasure_score, obs.erasure_score_ci, pct,
                None if pres is None else pres["presence"], None if pres is None else pres["presence_ci"])
    return {**obs.to_dict(), "reverse": reverse, "presence": pres}, benign, ev.to_dict(), timings


def cad(base: ModelHandle, edited: ModelHandle, task: Task, *, circuit: Circuit | None = None,
        settings: CADSettings | None = None, search: CircuitSearch | None = None,
        retain: Task | None = None, unrelated: Task | None = None, lens_rows: list[Task] | None = None) -> CADResult:
    """Compare M₀ = ``base`` and M₁ = ``edited`` on the forget rows ``task`` (see module doc).

    ``retain``: rows the edit should not touch (same domain is best), for the specificity and basis checks;
    without them the verdict cannot tell an edit that breaks everything from erasure. ``unrelated``: rows
    about other things (not the forget domain) for the matched fine-tune part of the benign null.
    ``lens_rows``: rows (never the forget rows) to fit M₀'s presence lens on; default ``retain`` and
    ``unrelated``. ``circuit``: the
    base circuit of the paper's CAD; when None (and ``settings.attribution``) it is found with ``search``
    (default ``CircuitSearch(method, ig_steps, faithfulness from settings, rows=None)``)."""
    s = settings or CADSettings()
    t0 = time.time()
    check_compatible(base, edited)
    if len(task) < 4:
        raise CircuitForgeError("CAD needs at least 4 task rows (its null splits the prompts in halves)")
    rec, benign, ev, timings = recovery_evidence(base, edited, task, retain, s, unrelated, lens_rows)
    nan = float("nan")
    att: dict[str, Any] = {"value": nan, "z": nan, "behavioural": {}, "mechanistic": {}, "mechanistic_upstream": {},
                           "faithfulness_base": None, "faithfulness_edited": None, "edges": [], "layer_mass": {},
                           "circuit": {}}
    t_att = time.time()
    if s.attribution:
        if circuit is None:
            circuit = (search or CircuitSearch(method=s.method, ig_steps=s.ig_steps, faithfulness=s.faithfulness,
                                               rows=None)).find(base, task)
        att = _attribution_cad(base, edited, task, circuit, s, timings)
    timings["attribution"] = time.time() - t_att
    return CADResult(verdict=ev["verdict"], **att, settings=asdict(s), base=base.identity(),
                     edited=edited.identity(), task=task.identity(), seconds=time.time() - t0, recovery=rec,
                     benign=benign, evidence=ev, retain_task=retain.identity() if retain is not None else None,
                     timings=timings)


def _attribution_cad(base: ModelHandle, edited: ModelHandle, task: Task, circuit: Circuit, s: CADSettings,
                     timings: dict[str, float]) -> dict[str, Any]:
    """The paper's CAD and its per-edge evidence (module doc, item 4); adds its phases to ``timings``."""
    from circuitforge.circuits import faithfulness

    edges = list(circuit.edges)
    if not edges:
        raise CircuitForgeError("the base circuit has no edges")
    t0 = time.time()
    s0 = base_edge_scores(base, task, edges, s)
    timings["attribution_base"] = time.time() - t0
    s_beh = per_example_edge_scores(edited, task, edges, s)
    s_mech = per_example_edge_scores(with_base_readout(edited, base), task, edges, s)
    timings["attribution_edited"] = time.time() - t0 - timings["attribution_base"]

    late = s.late_layers if s.late_layers is not None else max(1, round(base.n_layers / 5))
    cut = base.n_layers - late
    src_layers = [_layer(e.split("->", 1)[0]) for e in edges]
    up = torch.tensor([layer < cut for layer in src_layers])
    beh = calibrated_cad(s0, s_beh, s.n_null, s.seed)
    mech = calibrated_cad(s0, s_mech, s.n_null, s.seed)
    mech_up = calibrated_cad(s0[:, up], s_mech[:, up], s.n_null, s.seed) if bool(up.any()) else mech

    m0, mb, mm = s0.mean(0), s_beh.mean(0), s_mech.mean(0)
    layers = sorted(set(src_layers))

    def mass(v: torch.Tensor) -> list[float]:
        return [float(v[[i for i, x in enumerate(src_layers) if x == layer]].abs().sum()) for layer in layers]

    edge_rows = [{"edge": e, "base": float(m0[i]), "edited_own_readout": float(mb[i]),
                  "edited_base_readout": float(mm[i]), "change": float(mm[i] - m0[i]),
                  "behavioural_change": float(mb[i] - m0[i]), "upstream": bool(up[i])} for i, e in enumerate(edges)]

    def _faith(h: ModelHandle) -> float | None:
        try:
            v = float(faithfulness(h, task, circuit))
        except (ZeroDivisionError, CircuitForgeError):
            return None
        return v if v == v else None

    return {"value": mech_up.value, "z": mech_up.z, "behavioural": _calib_dict(beh), "mechanistic": _calib_dict(mech),
            "mechanistic_upstream": _calib_dict(mech_up), "faithfulness_base": (circuit.faithfulness if circuit.found_on(base, task) and circuit.faithfulness is not None
                                  else _faith(base)),
            "faithfulness_edited": _faith(edited), "edges": edge_rows,
            "layer_mass": {"layers": layers, "base": mass(m0), "edited_own_readout": mass(mb),
                           "edited_base_readout": mass(mm), "upstream_cut_layer": cut},
            "circuit": circuit.to_dict()}
