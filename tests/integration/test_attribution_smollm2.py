"""EAP node scores on SmolLM2-135M (GQA: 9 heads, 3 KV heads) against exact activation patching."""

import pytest
import torch
from scipy.stats import spearmanr

from circuitforge.attribution import attribute
from circuitforge.data import task_from_rows

pytestmark = pytest.mark.slow

PAIRS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Japan", "Tokyo"),
         ("Russia", "Moscow"), ("Greece", "Athens")]


def test_eap_matches_exact_patching(smollm2):
    n = len(PAIRS)
    rows = [{"prompt": f"The capital of {c} is", "answer": f" {a}",
             "corrupt_prompt": f"The capital of {PAIRS[(i + 1) % n][0]} is", "corrupt_answer": f" {PAIRS[(i + 1) % n][1]}"}
            for i, (c, a) in enumerate(PAIRS)]
    task = task_from_rows(rows, "capitals")
    g = attribute(smollm2, task, method="eap", level="node")
    assert g.clean_metric > 2 and g.corrupt_metric < -2
    # all MLPs, the input and the heads of every fifth layer (keeps the test short)
    nodes = ["input"] + [f"m{L}" for L in range(smollm2.n_layers)]
    nodes += [f"a{L}.h{h}" for L in range(0, smollm2.n_layers, 5) for h in range(smollm2.n_heads)]
    x = attribute(smollm2, task, method="exact", level="node", nodes=nodes)
    idx = torch.tensor([g.writers.index(v) for v in nodes])
    rho = spearmanr(g.node_scores[idx].numpy(), x.node_scores[idx].numpy())[0]
    assert rho >= 0.8, rho
    assert x.node_score("input") == pytest.approx(x.clean_metric - x.corrupt_metric, abs=1e-3)
