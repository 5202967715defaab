"""Edge attribution under a memory budget (``attribute(..., memory_budget=)``, :mod:`circuitforge.attribution.memory`):
the measured peak stays within the budget where the unbudgeted run's does not, and the scores equal the
unbudgeted ones; a budget no row fits is refused in one line; the CPU peak measurement is checked on
allocations of known size."""

import pytest
import torch

from circuitforge.attribution import attribute
from circuitforge.attribution.memory import parse_bytes, peak_bytes
from circuitforge.data import task_from_rows
from circuitforge.errors import CircuitForgeError


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5 * float(b.abs().max()), rtol=0)


def test_peak_bytes_measures_known_allocations():
    def f() -> float:
        a = torch.ones(1000, 1000)        # 4 MB
        b = torch.ones(1000, 1000)        # 4 MB: 8 MB alive
        c = a @ b                         # 12 MB alive
        del a, b                          # 4 MB alive
        d = torch.ones(2000, 1000)        # 12 MB alive again
        return float(c[0, 0] + d[0, 0])

    out, peak = peak_bytes(f)
    assert out == 1001.0
    assert 12_000_000 <= peak < 12_100_000


@pytest.mark.parametrize(("method", "corruption"), [("eap", "counterfactual"), ("eap", "mean"),
                                                    ("eap-ig", "counterfactual")])
def test_budgeted_edges_fit_and_equal_the_unbudgeted(tiny_facts, forget_task, method, corruption):
    full, p_full = peak_bytes(lambda: attribute(tiny_facts, forget_task, method=method, level="edge",
                                                corruption=corruption, ig_steps=2, batch_size=None))
    budget = p_full // 3
    g = attribute(tiny_facts, forget_task, method=method, level="edge", corruption=corruption, ig_steps=2,
                  memory_budget=budget)
    m = g.settings["memory"]
    assert p_full > budget                        # without the budget the same rows do not fit
    assert m["within_budget"] and m["peak"] <= budget and m["budget"] == budget
    assert 1 <= m["rows"] < len(forget_task) and m["probe"][0] < m["probe"][1]
    _close(g.edge_scores, full.edge_scores)
    _close(g.node_scores, full.node_scores)
    assert g.clean_metric == pytest.approx(full.clean_metric, rel=1e-5, abs=1e-5)
    assert g.corrupt_metric == pytest.approx(full.corrupt_metric, rel=1e-5, abs=1e-5)


def test_budget_with_per_row_scores_plans_rows(tiny_facts, forget_task):
    task = forget_task.head(12)
    full, p_full = peak_bytes(lambda: attribute(tiny_facts, task, method="eap", level="edge", per_row=True,
                                                batch_size=None))
    g = attribute(tiny_facts, task, method="eap", level="edge", per_row=True, memory_budget=p_full // 2)
    assert g.settings["memory"]["within_budget"] and g.settings["memory"]["rows"] < 12
    _close(g.row_edge_scores, full.row_edge_scores)


def test_streamed_edges_under_post_attention_norms(tiny_gemma3):
    """Gemma 3's head writers are residual shares taken at the post-attention norm; streaming must fold in
    the same writers (compared with the collected gradients, all rows in one pass)."""
    rows = [{"prompt": "the symbol of elem1 is", "answer": "sym3", "corrupt_prompt": "the symbol of elem2 is",
             "corrupt_answer": "sym5"},
            {"prompt": "the capital of land4 is", "answer": "city1", "corrupt_prompt": "the capital of land7 is",
             "corrupt_answer": "city9"}]
    task = task_from_rows(rows, "mini")
    full = attribute(tiny_gemma3, task, method="eap", level="edge", batch_size=None)
    g = attribute(tiny_gemma3, task, method="eap", level="edge", memory_budget="1GB")
    assert g.settings["memory"]["rows"] == 2
    _close(g.edge_scores, full.edge_scores)


def test_budget_too_small_and_bad_values(tiny_facts, forget_task):
    with pytest.raises(CircuitForgeError, match="one row of this task needs"):
        attribute(tiny_facts, forget_task, method="eap", level="edge", memory_budget=1000)
    with pytest.raises(CircuitForgeError, match="eap and eap-ig"):
        attribute(tiny_facts, forget_task, method="exact", level="node", memory_budget="1GB")
    assert parse_bytes("512MB") == 512 * 2**20 and parse_bytes("2 GiB") == 2 * 2**30 and parse_bytes(800) == 800
    assert parse_bytes("1.5k") == 1536
    for bad in ("lots", "0MB", "-1GB", "5 parsecs"):
        with pytest.raises(CircuitForgeError, match="memory budget"):
            parse_bytes(bad)
