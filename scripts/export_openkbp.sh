#!/usr/bin/env bash
# Export the OpenKBP train-pats and validation-pats folders from a git copy of github.com/ababier/open-kbp
# (bare or not) into DEST/provided-data/. Files missing from the copy (blobs of 4 MiB and more) are skipped;
# training's OpenKBP reader reports the patients that are incomplete. test-pats is never exported: it is the
# independent holdout and no training, tuning or selection step may read it.
set -euo pipefail
GIT_DIR_SRC=${1:?usage: export_openkbp.sh GIT_DIR DEST}
DEST=${2:?usage: export_openkbp.sh GIT_DIR DEST}
export GIT_DIR="$GIT_DIR_SRC"
n_ok=0; n_missing=0
while read -r mode type sha path; do
  case "$path" in
    provided-data/train-pats/*|provided-data/validation-pats/*) ;;
    *) continue ;;
  esac
  mkdir -p "$DEST/$(dirname "$path")"
  if git cat-file blob "$sha" > "$DEST/$path.tmp" 2>/dev/null; then
    mv "$DEST/$path.tmp" "$DEST/$path"; n_ok=$((n_ok+1))
  else
    rm -f "$DEST/$path.tmp"; n_missing=$((n_missing+1))
  fi
done < <(git ls-tree -r HEAD provided-data/train-pats provided-data/validation-pats | tr '\t' ' ')
echo "exported $n_ok files, $n_missing missing from the copy"
