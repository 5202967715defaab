"""Shared fixtures. Session fixtures are read-only: tests that edit weights load their own copy
(``fresh(spec)``), which is cheap for tiny models (loading from the cache takes < 0.1 s)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_gpt2():
    from circuitforge.models import load

    return load("tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama():
    from circuitforge.models import load

    return load("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gemma3():
    from circuitforge.models import load

    return load("tiny-gemma3")


@pytest.fixture(scope="session")
def tiny_facts():
    from circuitforge.models import load

    return load("tiny-facts")


@pytest.fixture(scope="session")
def smollm2():
    from circuitforge.models import load

    return load("smollm2-135m")


@pytest.fixture
def fresh():
    """``fresh(spec)`` loads a private, mutable copy of a model."""
    from circuitforge.models import load

    return lambda spec: load(spec, progress=False)


@pytest.fixture(scope="session")
def forget_task():
    from circuitforge.data import load_task

    return load_task("tiny-facts:forget")


@pytest.fixture(scope="session")
def uneven_task(forget_task):
    """The first rows of the tiny forget task with answers of 1, 2 and 3 tokens and prompts of unequal
    length (padded answer positions for the answer-position losses)."""
    from circuitforge.data import ClozeItem, Task

    items = [ClozeItem(it.prompt + " the" * (i % 2), it.answer * (1 + i % 3), it.distractors)
             for i, it in enumerate(forget_task.items[:6])]
    return Task(f"{forget_task.name}[uneven]", "cloze", tuple(items))


@pytest.fixture(scope="session")
def retain_task():
    from circuitforge.data import load_task

    return load_task("tiny-facts:retain")
