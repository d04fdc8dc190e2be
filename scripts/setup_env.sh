#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv. Idempotent:
# a stamp holding the hash of pyproject.toml and this script skips the work
# when nothing changed. Install order matters (see shared ENVIRONMENT notes):
# torch first, then the project with --no-build-isolation so that building
# fairseq-fixed's extensions reuses this torch instead of fetching another.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${L2T_VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "fairseq-l2t needs Python 3.11, found " + sys.version.split()[0]'

# Debian data the offline main job, the README and the tests read: the full Fashion-MNIST (MIT), the Ding
# de-en dictionary of the NMT recipe (GPL-2+) and the Bible
# modules of the es-en extraction test (public domain).  Needs root; elsewhere the image CLIs fall back
# to torchvision's download and the Bible test names the package it skips for.
debian_data=(dataset-fashion-mnist:/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
             trans-de-en:/usr/share/trans/de-en
             sword-text-kjv:/usr/share/sword/modules/texts/ztext/engKJV2006eb
             sword-text-sparv:/usr/share/sword/modules/texts/ztext/spaRV1909eb)
missing=()
for entry in "${debian_data[@]}"; do
    [ -e "${entry#*:}" ] || missing+=("${entry%%:*}")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
        || echo "warning: could not install ${missing[*]} with apt-get" >&2
fi

stamp_value=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
stamp_file="$VENV/.l2t-setup-stamp"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_value" ]; then
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade "pip>=24" "setuptools>=68" wheel
"${PIP[@]}" install --quiet torch==2.14.1 torchvision==0.29.1 cython numpy
"${PIP[@]}" install --quiet --no-build-isolation -e ".[test]"
echo "$stamp_value" > "$stamp_file"
