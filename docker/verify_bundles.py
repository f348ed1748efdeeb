"""Build-time check of the model bundles baked into an image: there is at least one, every one passes its
SHA256SUMS (a Git LFS pointer or a truncated copy fails here, not on the first patient), and the promoted default
(``model_store/PROMOTED``), if any, names one of them. Exit 0 and one line per bundle, or exit 1 with the reason.

    python docker/verify_bundles.py /app/model_store
"""

from __future__ import annotations

import sys
from pathlib import Path

from service.errors import EnvironmentFault
from service.model_bundle import list_bundles, promoted_spec, resolve_bundle, verify_bundle


def check_store(store: Path) -> list[str]:
    """The specs of the verified bundles in ``store``; raises SystemExit with the reason if the store is unusable."""
    bundles = list_bundles(store)
    if not bundles:
        raise SystemExit(f"no model bundle in {store}: export one (make export) before building the image")
    for ref in bundles:
        try:
            verify_bundle(ref)
        except EnvironmentFault as exc:
            raise SystemExit(f"model bundle {ref.spec}: {exc.message}") from None
    promoted = promoted_spec(store)
    if promoted is not None:
        try:
            resolve_bundle(promoted, store)
        except EnvironmentFault as exc:
            raise SystemExit(f"{store}/PROMOTED: {exc.message}") from None
    return [ref.spec + (" (promoted)" if ref.spec == promoted else "") for ref in bundles]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    store = Path(args[0] if args else "model_store")
    for line in check_store(store):
        print(f"model bundle verified: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
