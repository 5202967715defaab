"""Stage 2 — data: task files, validation, and batched scoring."""

from circuitforge.data.scoring import EvalResult, continuation_logprobs, evaluate
from circuitforge.data.task import ChoiceItem, ClozeItem, Task, builtin_names, load_task, task_from_rows

__all__ = [
    "ChoiceItem", "ClozeItem", "EvalResult", "Task", "builtin_names", "continuation_logprobs", "evaluate",
    "load_task", "task_from_rows",
]
