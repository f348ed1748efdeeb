"""docs/corpus.md carries the corpus table exactly as the cases define it (the expectations the tests assert)."""

from __future__ import annotations

from tests.conftest import REPO_ROOT
from tests.corpus.model import Case, markdown_table


def test_docs_table_is_current(corpus: dict[str, Case]) -> None:
    table = markdown_table(list(corpus.values()))
    doc = (REPO_ROOT / "docs" / "corpus.md").read_text()
    assert table in doc, "docs/corpus.md is out of date: regenerate the table with `python -m tests.corpus`"
