#!/usr/bin/env bash
# The README's test command: build the environment if needed, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
