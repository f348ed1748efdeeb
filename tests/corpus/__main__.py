"""``python -m tests.corpus``: print the corpus table (the expectations the corpus tests assert)."""

import tempfile
from pathlib import Path

from tests.corpus import build_corpus
from tests.corpus.model import markdown_table

with tempfile.TemporaryDirectory() as tmp:
    print(markdown_table(build_corpus(Path(tmp))), end="")
