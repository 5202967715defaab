"""Stability of a circuit across data: circuits found on disjoint halves of the task (even/odd rows,
and random halves for each seed) compared by edge Jaccard index and Spearman rank correlation of their
edge scores (Conmy et al. 2023 and Hanna et al. 2024 report similar overlap measures)."""

from typing import Any

import torch

from circuitforge.attribution.api import attribute
from circuitforge.circuits.select import select_top_n
from circuitforge.data.task import Task
from circuitforge.models.handle import ModelHandle


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties) of two 1-D tensors."""
    from scipy.stats import spearmanr

    r = spearmanr(a.double().numpy(), b.double().numpy())[0]
    return float(r) if r == r else 0.0


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def stability(
    handle: ModelHandle,
    task: Task,
    n_edges: int,
    method: str = "eap",
    level: str = "edge",
    seeds: tuple[int, ...] = (0, 1),
    **attribute_kw: Any,
) -> dict[str, Any]:
    """Jaccard of top-``n_edges`` circuits and score rank correlation between disjoint halves: the
    even/odd halves and one random split per seed. Returns per-split values and their means."""
    splits: list[tuple[str, Task, Task]] = [("even/odd", *task.halves())]
    n = len(task)
    for s in seeds:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(s)).tolist()
        splits.append((f"seed {s}", task.subset(perm[: n // 2]), task.subset(perm[n // 2 :])))
    rows: list[dict[str, Any]] = []
    for name, a, b in splits:
        ga = attribute(handle, a, method=method, level=level, **attribute_kw)
        gb = attribute(handle, b, method=method, level=level, **attribute_kw)
        ca, cb = select_top_n(ga, n_edges, False), select_top_n(gb, n_edges, False)
        if ga.edge_scores is not None and gb.edge_scores is not None:
            m = ga.mask & gb.mask
            rho = spearman(ga.edge_scores[m], gb.edge_scores[m])
        else:
            rho = spearman(ga.node_scores, gb.node_scores)
        rows.append({"split": name, "jaccard": jaccard(set(ca.edges), set(cb.edges)), "spearman": rho})
    return {
        "n_edges": n_edges, "method": method, "splits": rows,
        "jaccard_mean": sum(float(r["jaccard"]) for r in rows) / len(rows),
        "spearman_mean": sum(float(r["spearman"]) for r in rows) / len(rows),
    }
