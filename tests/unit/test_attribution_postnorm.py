"""Writers add up to the residual stream, also under Gemma 3's norms after attention and MLP.

Gemma 3 (``tiny-gemma3``) normalises each attention output before adding it to the residual, so a head's
``hook_result`` is not what it writes; its writer is its residual share (``circuitforge.attribution.hooks``).
Two consequences are checked against a model without post-norms (``tiny-llama``): the writers of a pass sum
to the final residual, and corrupting every outgoing edge of a writer is the same intervention as
patching the writer itself. (Full/empty-graph patching and EAP-vs-exact on a linearised model cannot tell
the two definitions apart: every writer downstream of a fully corrupted input is already corrupt, and a
linear model agrees with its own first-order expansion whatever the writers are.)
"""

import pytest
import torch

from circuitforge.attribution import common as C
from circuitforge.attribution import encode_task, layout_of
from circuitforge.attribution import hooks as H
from circuitforge.attribution.metrics import logit_diff
from circuitforge.data import task_from_rows

ROWS = [
    {"prompt": "the symbol of elem1 is", "answer": "sym3", "corrupt_prompt": "the symbol of elem2 is", "corrupt_answer": "sym5"},
    {"prompt": "the capital of land4 is", "answer": "city1", "corrupt_prompt": "the capital of land7 is", "corrupt_answer": "city9"},
]


@pytest.fixture(scope="module")
def task():
    return task_from_rows(ROWS, "mini")


def test_post_attention_norms_are_found(tiny_gemma3, tiny_llama, tiny_gpt2):
    assert H.post_attention_norms(tiny_llama) is None and H.post_attention_norms(tiny_gpt2) is None
    norms = H.post_attention_norms(tiny_gemma3)
    assert norms is not None and len(norms) == tiny_gemma3.n_layers


@pytest.mark.parametrize("spec", ["tiny_llama", "tiny_gemma3"])
def test_writers_sum_to_the_residual(spec, task, request):
    h = request.getfixturevalue(spec)
    batch = encode_task(h, task)
    final: dict[str, torch.Tensor] = {}
    with H.prepared(h):
        with H.installed(h.bridge, [("ln_final.hook_in", lambda x, hook: final.__setitem__("x", x.detach().clone()))]):
            out = H.run(h, batch.clean, batch.last, capture=True)
        same = H.run(h, batch.clean, batch.last, writer_fn=lambda slot, s: s.clone())  # a no-op replacement
    assert out.writers is not None
    scale = float(final["x"].abs().max())
    torch.testing.assert_close(out.writers.sum(0), final["x"], atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(same.last_logits, out.last_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec", ["tiny_llama", "tiny_gemma3"])
def test_corrupting_a_writers_edges_is_patching_the_writer(spec, task, request):
    h = request.getfixturevalue(spec)
    batch = encode_task(h, task)
    lay = layout_of(h)
    ch = next(C.chunks(batch, logit_diff, None))
    with H.prepared(h):
        st = C.clean_and_corrupt(h, ch, logit_diff, None)
        for node in ("a0.h1", "m0", "a1.h3"):
            w = lay.writer_index(node)
            keep = torch.ones(len(lay.writers), len(lay.readers), dtype=torch.bool)
            keep[w] = False
            by_edges = C.ablated_metric(h, ch, st.corr_writers, keep)

            def swap(slot: H.Slot, s: torch.Tensor, w: int = w) -> torch.Tensor | None:
                if not slot.start <= w < slot.start + slot.count:
                    return None
                s = s.clone()
                s[w - slot.start] = st.corr_writers[w]
                return s

            by_node = H.run(h, batch.clean, batch.last, metric=ch.metric, writer_fn=swap).metric
            assert by_node is not None and abs(by_node - st.clean_metric) > 1e-4, node  # the patch matters
            assert by_edges == pytest.approx(by_node, abs=1e-5), node
