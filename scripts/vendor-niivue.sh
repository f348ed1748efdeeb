#!/usr/bin/env bash
# Refresh the vendored NiiVue viewer (https://github.com/niivue/niivue, BSD-2-Clause) that the review page
# (/ui) loads: installs the pinned @niivue/niivue from the npm registry into a temp folder (no install scripts run)
# and copies its self-contained ES module build (dist/index.js, no imports, no CDN) plus the licences into
# service/api/static/vendor/niivue/. The page never reaches the network; this script is the only thing that does.
#   bash scripts/vendor-niivue.sh            # the pinned version below
#   NIIVUE_VERSION=0.70.0 bash scripts/vendor-niivue.sh   # then commit the result and update the pin
set -euo pipefail

NIIVUE_VERSION="${NIIVUE_VERSION:-0.69.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/service/api/static/vendor/niivue"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

command -v npm >/dev/null || { echo "vendor-niivue: npm is required (apt-get install npm)" >&2; exit 1; }
cd "$TMP"
npm init -y >/dev/null
npm install --silent --ignore-scripts --no-audit --no-fund --save-exact "@niivue/niivue@${NIIVUE_VERSION}"
PKG="$TMP/node_modules/@niivue/niivue"
got="$(node -p "require('$PKG/package.json').version")"
licence="$(node -p "require('$PKG/package.json').license")"
[ "$got" = "$NIIVUE_VERSION" ] || { echo "vendor-niivue: got $got, wanted $NIIVUE_VERSION" >&2; exit 1; }
[ "$licence" = "BSD-2-Clause" ] || { echo "vendor-niivue: licence is now '$licence'; review it first" >&2; exit 1; }
if grep -qE '^import |import\(' "$PKG/dist/index.js"; then
  echo "vendor-niivue: dist/index.js is no longer self-contained (it imports modules)" >&2
  exit 1
fi

rm -rf "$DEST" && mkdir -p "$DEST"
cp "$PKG/dist/index.js" "$DEST/niivue.js"
if [ -f "$PKG/LICENSE" ]; then
  cp "$PKG/LICENSE" "$DEST/LICENSE"
else  # the npm package does not ship its LICENSE file; this is the upstream repository's (BSD 2-Clause)
  cat > "$DEST/LICENSE" <<'LIC'
BSD 2-Clause License

Copyright (c) 2021, Niivue
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
LIC
fi
# the build bundles NiiVue's runtime dependencies: keep their licences next to it
{
  echo "Licences of the packages bundled into niivue.js (@niivue/niivue ${NIIVUE_VERSION} and its dependencies)"
  for dep in $(node -p "Object.keys(require('$PKG/package.json').dependencies || {}).join(' ')"); do
    dir="$TMP/node_modules/$dep"
    [ -d "$dir" ] || continue
    echo; echo "==== $dep $(node -p "require('$dir/package.json').version") ($(node -p "JSON.stringify(require('$dir/package.json').license)"))"
    for f in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/license*; do [ -f "$f" ] && cat "$f" && break; done
  done
} > "$DEST/THIRD_PARTY_LICENSES.txt"
cat > "$DEST/VERSION" <<VER
@niivue/niivue ${NIIVUE_VERSION} (npm), file dist/index.js, sha256 $(sha256sum "$DEST/niivue.js" | cut -d' ' -f1)
refreshed by scripts/vendor-niivue.sh
VER
echo "vendor-niivue: @niivue/niivue ${NIIVUE_VERSION} -> ${DEST#$ROOT/}"
