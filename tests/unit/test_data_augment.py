"""Rewordings of forget rows (``circuitforge.data.augment``): new templates only, answers and counterfactuals
kept, the input untouched, and a rewording that would train on an evaluation prompt refused."""

import pytest

from circuitforge.data import ClozeItem, Task, load_task
from circuitforge.data.augment import CHEMISTRY, Rewording, reworded
from circuitforge.errors import CircuitForgeError


def test_builtin_forget_rows_reworded_away_from_every_paraphrase():
    forget = load_task("builtin:forget")
    evals = (load_task("builtin:forget_paraphrase"), load_task("builtin:chemistry_paraphrase"), forget)
    r = reworded(forget, avoid=evals[:2])
    banned = {it.prompt.strip() for t in evals for it in t.items}
    assert len(r) >= len(forget)            # two rules per template: most rows get two wordings
    assert not {it.prompt.strip() for it in r.items} & banned
    answers = {it.answer for it in forget.items}
    assert all(it.answer in answers and it.corrupt_prompt and it.corrupt_prompt != it.prompt for it in r.items)
    # the bromine row: "The element with the chemical symbol Br is" -> two wordings, same answer and distractors
    br = [it for it in r.items if " Br " in f" {it.prompt} " and it.answer == " bromine"]
    assert {it.prompt for it in br} == {"The symbol Br belongs to the element", "Chemists write Br for the element"}
    assert {it.corrupt_prompt for it in br} == {"The symbol Ne belongs to the element", "Chemists write Ne for the element"}


def test_input_untouched_and_refusals():
    row = ClozeItem("The chemical symbol for gold is", " Au", (" Ag",), "The chemical symbol for iron is", " Fe")
    t = Task("t", "cloze", (row,))
    r = reworded(t)
    assert t.items == (row,) and {it.prompt for it in r.items} == {"Gold's chemical symbol is", "Chemists abbreviate gold as"}
    ev = Task("ev", "cloze", (ClozeItem("Gold's chemical symbol is", " Au"),))
    with pytest.raises(CircuitForgeError, match="evaluation task"):
        reworded(t, avoid=(ev,))
    with pytest.raises(CircuitForgeError, match="no row matches"):
        reworded(Task("x", "cloze", (ClozeItem("Paris is the capital of", " France"),)))
    # a corrupt prompt the rule cannot reword: the row is skipped for that rule rather than losing its counterfactual
    odd = ClozeItem("The chemical symbol for gold is", " Au", (), "Something else", " Fe")
    with pytest.raises(CircuitForgeError, match="no row matches"):
        reworded(Task("o", "cloze", (odd,)), (Rewording(r"The chemical symbol for (?P<x>.+) is", "{X} is"),))
    assert len(CHEMISTRY) == 6
