"""Shared fixtures: small hand-written site datasets and a demo config, built in temporary folders,
and the small-scenario run of the real workflow (made once per session, see `pipeline`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
DEMO_KEY = b"test-key"


def write_tsv(path: Path, rows: list[list[object]], newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(str(v) for v in row) for row in rows)
    path.write_text(text + ("\n" if newline else ""))


def make_site(
    root: Path,
    *,
    scale: str = "MADRS",
    participants: list[list[object]] | None = None,
    scores: list[list[object]] | None = None,
) -> Path:
    """A tiny BIDS clinical dataset: 4 randomised TRD patients and 2 controls."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test", "BIDSVersion": "1.9.0"})
    )
    participants = participants or [
        ["participant_id", "age", "sex", "group", "arm"],
        ["sub-01", "34", "F", "TRD", "ketamine"],
        ["sub-02", "41y", "male", "patient", "KET"],
        ["sub-03", "n/a", "2", "TRD", "placebo"],
        ["sub-04", "52.5", "M", "TRD", "PBO"],
        ["sub-05", "30", "f", "HC", "n/a"],
        ["sub-06", "29 years", "n/a", "control", "n/a"],
    ]
    write_tsv(root / "participants.tsv", participants)
    scores = scores or [
        ["participant_id", "session_id", "total"],
        ["sub-01", "ses-pre", "30"],
        ["sub-01", "ses-post", "12"],
        ["sub-02", "ses-pre", "28"],
        ["sub-02", "ses-post", "20"],
        ["sub-03", "ses-pre", "35"],
        ["sub-03", "ses-post", "33"],
        ["sub-04", "ses-pre", "31"],
        ["sub-04", "ses-post", "n/a"],
        ["sub-05", "ses-pre", "2"],
        ["sub-06", "ses-pre", "0"],
    ]
    write_tsv(root / "phenotype" / "scores.tsv", scores)
    (root / "phenotype" / "scores.json").write_text(
        json.dumps({"MeasurementToolMetadata": {"Description": scale}})
    )
    for row in participants[1:]:
        pid = row[0]
        sessions = ["ses-pre", "ses-post"] if row[4] not in ("n/a",) else ["ses-pre"]
        write_tsv(
            root / pid / f"{pid}_sessions.tsv",
            [["session_id", "acq_time"], *[[s, "2021-01-01"] for s in sessions]],
        )
    return root


def site_entry(site_id: str = "test_site", **reader: object) -> dict:
    return {
        "id": site_id,
        "modality": "pet",
        "species": "human",
        "trial": "TRIAL-1",
        "registry": "unused",
        "revision": "v1",
        "reader": {
            "visits": {"ses-pre": "baseline", "ses-post": "post"},
            "scores": "phenotype/scores.tsv",
            "score_column": "total",
            "sex_codes": {"1": "male", "2": "female"},
            **reader,
        },
    }


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    return make_site(tmp_path / "site")


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KETAMAP_PSEUDONYM_KEY", raising=False)


def venv_bin() -> Path:
    return Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The small scenario run for real through `dvc repro`, which runs the Snakemake targets.

    Run once per session and shared by the workflow tests and the report test.
    """
    from workflow_project import hashes, make_project, run

    base = tmp_path_factory.mktemp("e2e")
    project = make_project(base / "project")
    run(["git", "init", "-q", "-b", "main"], project)
    run(["git", "add", "-A"], project)
    run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "project"],
        project,
    )
    repro = run(["dvc", "repro"], project)
    return {"project": project, "base": base, "hashes": hashes(project), "repro": repro}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """The bad-input corpus' consortium (tests/badinput.py), generated once per session."""
    from badinput import build

    return build(tmp_path_factory.mktemp("corpus"))
