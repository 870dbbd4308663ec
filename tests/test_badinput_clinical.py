"""Bad-input corpus, clinical: one-change copies of a synthetic site, harmonized as a job would.

Each case must end in one message naming the site, the file, the field and what was expected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from badinput import Consortium
from ketamap.errors import KetamapError


def _drop_column(path: Path, column: str) -> None:
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    idx = rows[0].index(column)
    path.write_text(
        "\n".join("\t".join(c for i, c in enumerate(r) if i != idx) for r in rows) + "\n"
    )


# (case id, site, change(site folder), substrings the message must hold)
CASES: list[tuple[str, str, Callable[[Path], None], list[str]]] = [
    (
        "participants_without_sex",
        "keio_hc",
        lambda d: _drop_column(d / "participants.tsv", "sex"),
        ["site 'keio_hc'", "file 'participants.tsv'", "field 'sex'", "expected"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_clinical_input_gets_one_clear_message(
    corpus: Consortium, tmp_path: Path, case
) -> None:
    _, site, change, needles = case
    raw = corpus.copy(site, tmp_path)
    change(raw)
    with pytest.raises(KetamapError) as err:
        corpus.harmonize(site, raw)
    message = str(err.value)
    for needle in needles:
        assert needle in message, message


def test_the_unchanged_corpus_sites_harmonize(corpus: Consortium, tmp_path: Path) -> None:
    """The corpus' baseline: every unchanged site harmonizes, so each case's failure is its change."""
    for site in [s["id"] for s in corpus.config["sites"]]:
        tables = corpus.harmonize(site, corpus.root / site)
        assert tables and all(len(t) for name, t in tables.items() if name == "subjects"), site
