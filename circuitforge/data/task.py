"""Task files: cloze and multiple-choice rows, loaded through ``datasets`` and validated row by row.

Row formats (detected by keys):

* cloze: ``{"prompt": str, "answer": str, "distractors": [str, ...]?, "corrupt_prompt": str?, "corrupt_answer": str?}``
  The answer (and distractors) are appended to the prompt verbatim, so give them their leading space
  (``" Paris"``); a missing leading space is added for you.
* multiple choice (WMDP format): ``{"question": str, "choices": [str, ...], "answer": int}``.

Sources: a ``.jsonl``/``.json``, ``.parquet`` or ``.csv`` file; ``builtin:NAME`` or ``builtin:MODEL/NAME`` (the shipped benchmark,
see :func:`builtin_names`); ``tiny-facts:NAME`` (the fact world of the tiny trained model); or a hub dataset
name (``name`` or ``name:split``) when online.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from circuitforge._provenance import sha256_json
from circuitforge.errors import CircuitForgeError

BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class ClozeItem:
    prompt: str
    answer: str
    distractors: tuple[str, ...] = ()
    corrupt_prompt: str | None = None
    corrupt_answer: str | None = None


@dataclass(frozen=True)
class ChoiceItem:
    question: str
    choices: tuple[str, ...]
    answer: int


Item = ClozeItem | ChoiceItem


@dataclass(frozen=True)
class Task:
    """A validated list of rows of one kind. Immutable; :meth:`subset` returns a new task."""

    name: str
    kind: Literal["cloze", "choice"]
    items: tuple[Item, ...]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sha256(self) -> str:
        """Content hash of the rows (independent of file format and path)."""
        return sha256_json([it.__dict__ for it in self.items])

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "n": len(self), "kind": self.kind}

    def subset(self, idx: list[int] | range, name: str | None = None) -> "Task":
        return Task(name or f"{self.name}[subset]", self.kind, tuple(self.items[i] for i in idx), self.source)

    def head(self, n: int) -> "Task":
        return self.subset(range(min(n, len(self))), name=f"{self.name}[:{n}]")

    def halves(self) -> tuple["Task", "Task"]:
        """Two disjoint halves (even / odd rows)."""
        return (self.subset(range(0, len(self), 2), f"{self.name}[even]"),
                self.subset(range(1, len(self), 2), f"{self.name}[odd]"))


def _space(s: str) -> str:
    return s if s[:1].isspace() else " " + s


def _listish(v: Any, where: str) -> list[str]:
    if isinstance(v, str):  # CSV cells hold JSON lists
        try:
            v = json.loads(v)
        except json.JSONDecodeError as e:
            raise CircuitForgeError(f"{where}: a string cell must hold a JSON list ({e.msg})") from e
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x.strip() for x in v):
        raise CircuitForgeError(f"{where}: expected a list of non-empty strings")
    return list(v)


def _row_to_item(row: dict[str, Any], where: str, kind: str) -> Item:
    def need_str(key: str) -> str:
        v = row.get(key)
        if not isinstance(v, str) or not v.strip():
            raise CircuitForgeError(f"{where}, field {key!r}: missing or not a non-empty string")
        return v

    def opt_str(key: str) -> str | None:
        v = row.get(key)
        if v is None or (isinstance(v, float) and v != v):  # None or NaN from CSV/Parquet
            return None
        if not isinstance(v, str) or not v.strip():
            raise CircuitForgeError(f"{where}, field {key!r}: not a non-empty string")
        return v

    if kind == "cloze":
        prompt, answer = need_str("prompt"), need_str("answer")
        d = row.get("distractors")
        distractors = [] if d is None else _listish(d, f"{where}, field 'distractors'")
        cp, ca = opt_str("corrupt_prompt"), opt_str("corrupt_answer")
        if ca is not None and cp is None:
            raise CircuitForgeError(f"{where}, field 'corrupt_prompt': required when corrupt_answer is given")
        if _space(answer) in [_space(x) for x in distractors]:
            raise CircuitForgeError(f"{where}, field 'distractors': contains the answer")
        return ClozeItem(prompt, _space(answer), tuple(_space(x) for x in distractors), cp,
                         _space(ca) if ca else None)
    q = need_str("question")
    choices = _listish(row.get("choices"), f"{where}, field 'choices'")
    if len(choices) < 2:
        raise CircuitForgeError(f"{where}, field 'choices': need at least 2 choices")
    a = row.get("answer")
    if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < len(choices):
        raise CircuitForgeError(f"{where}, field 'answer': must be an int index into choices (0..{len(choices) - 1})")
    return ChoiceItem(q, tuple(choices), a)


def task_from_rows(rows: list[dict[str, Any]], name: str, source: str = "") -> Task:
    """Validate rows (detect the format from the first row's keys) and build a :class:`Task`."""
    if not rows:
        raise CircuitForgeError(f"{source or name}: no rows")
    first = rows[0]
    if "prompt" in first:
        kind = "cloze"
    elif "question" in first:
        kind = "choice"
    else:
        raise CircuitForgeError(f"{source or name}, row 1: unknown format (need 'prompt'+'answer' or 'question'+'choices'+'answer')")
    items = tuple(_row_to_item(r, f"{source or name}, row {i + 1}", kind) for i, r in enumerate(rows))
    return Task(name=name, kind=kind, items=items, source=source)  # type: ignore[arg-type]


def builtin_names() -> list[str]:
    """Built-in task names: ``NAME`` (selected on SmolLM2-135M) and ``MODEL/NAME`` (the slices of them
    another model knows, ``benchmarks/build_slices.py``)."""
    top = [p.stem for p in BUILTIN_DIR.glob("*.jsonl")]
    return sorted(top) + sorted(f"{p.parent.name}/{p.stem}" for p in BUILTIN_DIR.glob("*/*.jsonl"))


def _read_file(path: Path) -> list[dict[str, Any]]:
    import datasets

    suffix = path.suffix.lower()
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix)
    if builder is None:
        raise CircuitForgeError(f"{path}: unsupported task file type {suffix!r} (use .jsonl, .json, .parquet or .csv)")
    if suffix in (".jsonl", ".json"):  # validate JSON lines ourselves to report the row number
        rows: list[dict[str, Any]] = []
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            data = json.loads(text)
            return list(data)
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CircuitForgeError(f"{path}, row {len(rows) + 1} (line {i + 1}): invalid JSON: {e.msg}") from e
            if not isinstance(obj, dict):
                raise CircuitForgeError(f"{path}, row {len(rows) + 1}: not a JSON object")
            rows.append(obj)
        return rows
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001
        raise CircuitForgeError(f"{path}: could not read: {str(e).splitlines()[0]}") from e
    return [dict(r) for r in ds]


def load_task(source: str | os.PathLike[str], name: str | None = None) -> Task:
    """Load and validate a task. See the module docstring for accepted sources.

    Raises:
        CircuitForgeError: naming the file, the row number and the field of the first bad row.
    """
    s = str(source)
    if s.startswith("builtin:"):
        key = s.split(":", 1)[1]
        path = BUILTIN_DIR / f"{key}.jsonl"
        if key not in builtin_names() or not path.is_file():
            raise CircuitForgeError(f"{s}: no such built-in task (have: {', '.join(builtin_names())})")
        return task_from_rows(_read_file(path), name or s, source=s)
    if s.startswith("tiny-facts:"):
        from circuitforge.models.tiny import task_path

        key = s.split(":", 1)[1]
        path = task_path(key)
        if not path.is_file():
            raise CircuitForgeError(f"{s}: no such fact-world task (forget, forget_paraphrase, retain, retain_paraphrase)")
        return task_from_rows(_read_file(path), name or s, source=s)
    path = Path(s).expanduser()
    if path.is_file():
        return task_from_rows(_read_file(path), name or path.stem, source=str(path))
    if path.suffix.lower() in (".jsonl", ".json", ".csv", ".parquet") or os.sep in s and s.count("/") > 1:
        raise CircuitForgeError(f"{s}: no such task file")
    import datasets

    ds_name, _, split = s.partition(":")
    try:
        datasets.disable_progress_bars()
        ds = datasets.load_dataset(ds_name, split=split or "test")
    except Exception as e:  # noqa: BLE001
        raise CircuitForgeError(
            f"{s!r} is not a task file or built-in task, and the hub dataset could not be loaded "
            f"(offline or unknown name: {type(e).__name__})"
        ) from e
    return task_from_rows([dict(r) for r in ds], name or s, source=s)
