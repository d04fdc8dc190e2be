#!/usr/bin/env bash
# The README's main command: build the environment if needed, then run the
# offline image-classification demo (CE vs label smoothing vs L2T-DLF on real
# MNIST digits). Extra arguments go to l2t-image-demo (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/l2t-image-demo "$@"
