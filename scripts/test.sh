#!/usr/bin/env bash
# The README's test command: build the environment if needed, run pytest, then run the tests whose claim is
# equality (marked `equality`: 2 processes = 1, resume = uninterrupted, engines agree) once more with PyTorch's
# portable CPU kernels (ATEN_CPU_CAPABILITY=default), so that an equality that holds only for this machine's
# vector kernels cannot land.  Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m pytest "$@"
ATEN_CPU_CAPABILITY=default exec .venv/bin/python -m pytest -m equality "$@"
