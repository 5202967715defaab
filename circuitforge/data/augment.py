"""Rewordings of forget rows: the same facts in templates that no evaluation set uses.

An unlearning method trained on one wording of a fact often removes only that wording: on SmolLM2 every
MANSU setting so far left ≥ 0.7 of the *paraphrases* of the targeted facts answered (docs/surgery.md).
The usual remedy (TOFU-style forget sets with perturbed phrasings) is to train on several wordings. To keep
the paraphrase evaluation honest, the wordings here are templates that neither the built-in forget rows'
evaluation paraphrases (``builtin:forget_paraphrase``, ``builtin:chemistry_paraphrase``) nor the forget
rows themselves use; :func:`reworded` refuses to produce a prompt that an evaluation task given to it
contains, so a paraphrase scored later was never trained on.

A :class:`Rewording` is a regular expression over a whole prompt (named group ``x``: the fact's subject)
and a template with ``{x}`` (as matched) and ``{X}`` (first letter upper-cased). The answer, distractors
and corrupt answer are kept; the corrupt prompt is reworded with the same rule (a row whose corrupt
prompt does not match the rule is skipped for that rule, so every reworded row keeps its counterfactual).
"""

import re
from dataclasses import dataclass, replace

from circuitforge.data.task import ClozeItem, Task
from circuitforge.errors import CircuitForgeError


@dataclass(frozen=True)
class Rewording:
    pattern: str   # a full-prompt regex with a named group ``x``
    template: str  # ``{x}`` / ``{X}``: the matched subject, as is / capitalised

    def apply(self, prompt: str) -> str | None:
        m = re.fullmatch(self.pattern, prompt)
        if m is None:
            return None
        x = m.group("x")
        return self.template.format(x=x, X=x[:1].upper() + x[1:])


#: Rewordings of the built-in chemistry templates ("The chemical symbol for X is", "The element with the
#: chemical symbol X is", "The chemical formula for X is"), two per template, none of them a template of
#: the built-in paraphrase sets ("On the periodic table, X is written as", "In chemistry, the symbol X stands
#: for", "X has the chemical symbol/formula", "A molecule of X is written as", "Q: What is the chemical
#: symbol of X?").
CHEMISTRY: tuple[Rewording, ...] = (
    Rewording(r"The chemical symbol for (?P<x>.+) is", "{X}'s chemical symbol is"),
    Rewording(r"The chemical symbol for (?P<x>.+) is", "Chemists abbreviate {x} as"),
    Rewording(r"The element with the chemical symbol (?P<x>\S+) is", "The symbol {x} belongs to the element"),
    Rewording(r"The element with the chemical symbol (?P<x>\S+) is", "Chemists write {x} for the element"),
    Rewording(r"The chemical formula for (?P<x>.+) is", "The formula of {x} is"),
    Rewording(r"The chemical formula for (?P<x>.+) is", "Chemists write {x} with the formula"),
)


def reworded(task: Task, rewordings: tuple[Rewording, ...] = CHEMISTRY, *, avoid: tuple[Task, ...] = (),
             name: str | None = None) -> Task:
    """A new cloze task: for every row of ``task`` and every rule that matches its prompt (and its corrupt
    prompt, when it has one), the row with both prompts reworded; answers, distractors and the corrupt answer
    unchanged. ``task`` is not modified. Raises when a reworded prompt is a prompt of one of the ``avoid``
    tasks (an evaluation set must not contain what the method is trained on) or when no row matched."""
    if task.kind != "cloze":
        raise CircuitForgeError(f"{task.name}: rewording needs a cloze task, got {task.kind}")
    banned = {it.prompt.strip() for t in avoid for it in t.items if isinstance(it, ClozeItem)}
    own = {it.prompt.strip() for it in task.items if isinstance(it, ClozeItem)}
    out: list[ClozeItem] = []
    for it in task.items:
        assert isinstance(it, ClozeItem)
        for rule in rewordings:
            p = rule.apply(it.prompt)
            if p is None:
                continue
            cp = rule.apply(it.corrupt_prompt) if it.corrupt_prompt is not None else None
            if it.corrupt_prompt is not None and cp is None:
                continue
            if p.strip() in banned:
                raise CircuitForgeError(f"reworded prompt {p!r} is a prompt of an evaluation task")
            if p.strip() not in own:
                out.append(replace(it, prompt=p, corrupt_prompt=cp))
    if not out:
        raise CircuitForgeError(f"{task.name}: no row matches any of the {len(rewordings)} rewordings")
    return Task(name or f"{task.name}[reworded x{len(out)}]", "cloze", tuple(out), task.source)
