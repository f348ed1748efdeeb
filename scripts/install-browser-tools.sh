#!/usr/bin/env bash
# Install the headless browser the review-workstation tests drive (idempotent; no-op when present):
#   chromium         the browser (WebGL2 through SwiftShader: --use-angle=swiftshader --enable-unsafe-swiftshader)
#   chromium-driver  chromedriver, driven by selenium from pytest (tests/test_review_browser.py)
# Runs `apt-get update` at most once, non-interactively, waiting for another apt's lock; uses sudo when not root.
# Used by `make test` (target `tools`) next to scripts/install-debian-tools.sh.
set -euo pipefail

declare -A PACKAGE_OF=([chromium]=chromium [chromedriver]=chromium-driver)

missing=()
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-browser-tools: chromium and chromium-driver already installed"
  exit 0
fi
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser-tools: missing ${packages[*]} and no apt-get here; install them by hand" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-browser-tools: missing ${packages[*]}; need root or sudo to install them" >&2
    exit 1
  fi
fi

echo "install-browser-tools: installing ${packages[*]}"
APT=(apt-get -o DPkg::Lock::Timeout=600)
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${APT[@]}" update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -q --no-install-recommends "${packages[@]}"

for tool in "${!PACKAGE_OF[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-browser-tools: $tool still missing after installing ${PACKAGE_OF[$tool]}" >&2
    exit 1
  fi
done
echo "install-browser-tools: done"
