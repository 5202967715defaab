#!/usr/bin/env bash
# The test command (README): set up, lint, type-check, run every test tier and notebook, build the docs.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch first, pinned to the CPU wheel, so nothing later pulls a multi-GB CUDA build
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[dev]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false NO_MKDOCS_2_WARNING=1
# notebooks run top to bottom on the tiny trained model in the test suite (SmolLM2 by default)
export CIRCUITFORGE_NOTEBOOK_MODEL=tiny-facts
python -m ruff check circuitforge tests benchmarks notebooks
python -m mypy
python -m pytest tests notebooks --nbmake -q "$@"
if [ -f mkdocs.yml ]; then python -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"; fi
