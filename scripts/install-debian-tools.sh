#!/usr/bin/env bash
# Install the Debian/Ubuntu tools the tests use, only those that are missing (idempotent; no-op when present):
#   dcmtk        storescu, storescp, echoscu, dcmdump    (real DICOM network peers, dumps)
#   dicom3tools  dciodvfy                                (DICOM validator for the RTSTRUCT)
#   plastimatch  plastimatch                             (independent RTSTRUCT rasterizer)
#   orthanc      Orthanc                                 (a real PACS on loopback: whole-study sends)
#   chromium, chromium-driver  chromium, chromedriver    (headless browser: the commissioning report and the
#                                                          /docs and /redoc pages render offline)
# Runs `apt-get update` at most once, non-interactively; uses sudo when not root. Used by `make test` and .ci/run.
set -euo pipefail

# Orthanc installs to /usr/sbin, which is not on every user's PATH
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

declare -A PACKAGE_OF=(
  [storescu]=dcmtk [storescp]=dcmtk [echoscu]=dcmtk [dcmdump]=dcmtk
  [dciodvfy]=dicom3tools
  [plastimatch]=plastimatch
  [Orthanc]=orthanc
  [chromium]=chromium [chromedriver]=chromium-driver
)

missing=()
for tool in "${!PACKAGE_OF[@]}"; do
  have "$tool" || missing+=("${PACKAGE_OF[$tool]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-debian-tools: dcmtk, dicom3tools, plastimatch, orthanc and chromium already installed"
  exit 0
fi
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-debian-tools: missing ${packages[*]} and no apt-get here; install them by hand" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-debian-tools: missing ${packages[*]}; need root or sudo to install them" >&2
    exit 1
  fi
fi

echo "install-debian-tools: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${packages[@]}"

for tool in "${!PACKAGE_OF[@]}"; do
  if ! have "$tool"; then
    echo "install-debian-tools: $tool still missing after installing ${PACKAGE_OF[$tool]}" >&2
    exit 1
  fi
done
echo "install-debian-tools: done"
