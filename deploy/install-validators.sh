#!/usr/bin/env bash
# Installs the tools that tests/deploy validates the deploy files with, all from Debian's and
# PyPI's packages (no Docker engine is needed: compose files are only validated, not run):
#   docker-compose        `docker-compose -f deploy/compose.yaml config`
#   prometheus            `promtool check config|rules`, `promtool test rules`
#   kubernetes-validate   offline Kubernetes schema check (bundled schemas)
# kubectl (for `kubectl kustomize`) is used when present; tests/deploy skip what is missing and
# say which package to install.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PYTHON="${PYTHON:-.venv/bin/python}"
"$PYTHON" -c "import kubernetes_validate" 2>/dev/null \
    || "$PYTHON" -m pip install -q "kubernetes-validate>=1.31"
echo "deploy validators: $(docker-compose version --short) / $(promtool --version 2>&1 | head -1)"
