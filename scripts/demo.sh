#!/usr/bin/env bash
# The README's main command: build the environment if needed, then run the
# offline main job: one cell of the noisy-label table (Fashion-MNIST, 40 % class-
# dependent label noise, MLP, 1 seed). Extra arguments go to l2t-image-demo (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/l2t-image-demo "$@"
