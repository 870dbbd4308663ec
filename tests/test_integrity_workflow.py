"""Issue 12 end to end: kill -9 drills where a plain `make run` resumes to byte-identical results,
and flip drills (fetched data, tables) that are all detected by the workflow and `ketamap verify`.
(A flipped object on the DVC remote: tests/test_registry.py, tests/test_remotes.py.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO
from ketamap import integrity
from workflow_project import TABLES, broken_registry, hashes, make_project, run, tool_env


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _snakemake(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        ["snakemake", "--profile", "workflow/profiles/default", "--cores", "2", *args],
        project,
        check=False,
    )


def _copy(pipeline: dict, dest: Path) -> Path:
    shutil.copytree(pipeline["project"], dest, symlinks=True)
    return dest


def test_altered_fetched_data_is_fetched_again_and_never_read(
    pipeline: dict, tmp_path: Path
) -> None:
    """Ages edited in a fetched participants.tsv (56 -> 46 style), and a site's fetched folder
    deleted: the next run fetches both again and nothing after the fetches changes."""
    project = _copy(pipeline, tmp_path / "p")
    participants = project / "resources/raw/keio_hc/participants.tsv"
    text = participants.read_text()
    participants.write_text(text.replace("\t4", "\t3", 1))
    assert participants.read_text() != text
    shutil.rmtree(project / "resources/raw/ycu_obs")
    out = _snakemake(project)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert (
        "ketamap: keio_hc: participants.tsv was altered after the fetch; it is fetched again" in log
    )
    assert "ketamap: ycu_obs: the fetched folder was deleted; it is fetched again" in log
    assert participants.read_text() == text  # the release's bytes are back
    assert "rule harmonize" not in log and "localrule harmonize" not in log
    tables = {p: h for p, h in hashes(project).items() if p in TABLES}
    assert tables == {p: h for p, h in pipeline["hashes"].items() if p in TABLES}
    again = _snakemake(project, "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_flipped_table_is_named_and_never_pooled(pipeline: dict, tmp_path: Path) -> None:
    project = _copy(pipeline, tmp_path / "p")
    verify = run(["ketamap", "verify"], project, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    table = project / "results/tables/clinical_scores.parquet"
    stamp = table.stat()
    _flip(table, 100)
    os.utime(table, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    verify = run(["ketamap", "verify"], project, check=False)
    assert verify.returncode != 0
    assert (
        "DRIFT file 'results/tables/clinical_scores.parquet', field 'sha256': content changed"
        in verify.stdout
    )
    result = project / "results/pooled/clinical.madrs_change.parquet"
    before = result.read_bytes()
    out = _snakemake(project, "--forcerun", "pooled_clinical")
    log = out.stdout + out.stderr
    assert out.returncode != 0
    assert (
        "file 'results/tables/clinical_scores.parquet', field 'sha256': content changed after it "
        "was written" in log
    ), log[-3000:]
    assert "Traceback" not in log
    assert not result.exists() or result.read_bytes() == before


def _project_with_make(dest: Path) -> Path:
    project = make_project(dest)
    plugin = "packages/snakemake-storage-plugin-dvc/pyproject.toml"
    for name in ("Makefile", "requirements.lock", "requirements-uv.lock", "pyproject.toml", plugin):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, project / name)
        os.utime(project / name, (946684800, 946684800))  # older than the borrowed venv's stamp
    stamp = project / ".venv" / ".ketamap-installed"
    assert stamp.is_file() and stamp.stat().st_mtime > 946684800  # make never reinstalls it
    return project


def _reached(project: Path, point: str) -> bool:
    if point == "fetch":
        return any((project / "logs" / "fetch").glob("*.log"))
    if point == "harmonize":
        return any((project / "results" / "sites").rglob("*.parquet"))
    return any((project / "results" / "pooled").glob("*"))


def _wait_until_nothing_runs_in(project: Path, seconds: float = 120) -> None:
    """After the kill: a job process that had already left the process group is still dying.
    Wait until no process works in the project (what reading the run's output to its end did)."""
    deadline = time.monotonic() + seconds
    target = str(project.resolve())
    while time.monotonic() < deadline:
        alive = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "cwd") == target:
                        alive.append(entry.name)
                except OSError:
                    continue
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes still running in {project}: {alive}")


def test_kill_9_at_three_points_then_plain_make_run_resumes(pipeline: dict, tmp_path: Path) -> None:
    """`make run` killed with SIGKILL (its whole process group, as a power cut would) while
    fetching, while harmonizing and while pooling; each time a plain `make run` goes on with no
    manual step (no --unlock), and the last one finishes with the tables and results
    byte-identical to an uninterrupted run, no temporary file left and `ketamap verify` clean."""
    project = _project_with_make(tmp_path / "p")
    for point in ("fetch", "harmonize", "pooled"):
        # The run's output goes to a file, not a pipe nobody reads while waiting: a run of many
        # jobs fills a pipe's buffer, and make would block writing to it.
        out_file = tmp_path / f"make-run-{point}.log"
        with out_file.open("wb") as out:
            proc = subprocess.Popen(
                ["make", "run"],
                cwd=project,
                env=tool_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 900
        while not _reached(project, point):
            assert proc.poll() is None, (
                f"make run ended before {point}: {out_file.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, point
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_until_nothing_runs_in(project)
        output = out_file.read_text()
        assert proc.returncode != 0, output[-2000:]
        assert list((project / ".snakemake" / "locks").glob("*.lock")), point  # left locked
    done = run(["make", "run"], project, check=False)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-4000:]
    assert "stale Snakemake lock" in text
    tables = {p: h for p, h in hashes(project).items() if p in TABLES}
    assert tables == {p: h for p, h in pipeline["hashes"].items() if p in TABLES}
    assert not list(integrity.leftovers(project / "results"))
    verify = run(["ketamap", "verify"], project, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_make_run_refuses_a_live_run(tmp_path: Path) -> None:
    project = _project_with_make(tmp_path / "p")
    first = subprocess.Popen(
        ["make", "run"],
        cwd=project,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list((project / ".snakemake" / "locks").glob("*.lock")):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = run(["make", "run"], project, check=False)
        assert second.returncode != 0
        assert "another run is in progress" in second.stdout + second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


# -- one bad site through the whole workflow --------------------------------------------------


def _onsets_in_ms(site: Path) -> None:
    """Every puff onset of the first run's _events.tsv written in milliseconds."""
    events = sorted(site.rglob("*_events.tsv"))[0]
    rows = [line.split("\t") for line in events.read_text().splitlines()]
    i = rows[0].index("onset")
    for row in rows[1:]:
        row[i] = f"{float(row[i]) * 1000:g}"
    events.write_text("\n".join("\t".join(r) for r in rows) + "\n")


def _tracking_cut_short(site: Path) -> None:
    """A DeepLabCut CSV truncated at a row boundary: its second half lost in transfer."""
    tracking = sorted(site.rglob("*DLC_*.csv"))[0]
    lines = tracking.read_text().splitlines()
    tracking.write_text("\n".join(lines[: len(lines) // 2]) + "\n")


def _image_crc_flipped(site: Path) -> None:
    """One byte of a .nii.gz's gzip trailer (its CRC-32) flipped: every voxel still decompresses."""
    image = sorted(site.rglob("*_pet.nii.gz"))[0]
    _flip(image, image.stat().st_size - 8)


def _scores_header_only(site: Path) -> None:
    scores = site / "phenotype" / "madrs.tsv"
    scores.write_text(scores.read_text().splitlines()[0] + "\n")


BAD_SITES = [
    (
        "small",
        "ycu_obs",
        _image_crc_flipped,
        ["site 'ycu_obs'", "_pet.nii.gz'", "field 'gzip'", "expected"],
        "results/sites/ycu_rct/pet_regional.parquet",
        "results/tables/pet_regional.parquet",
    ),
    (
        "small",
        "ycu_rct",
        _scores_header_only,
        ["site 'ycu_rct'", "file 'phenotype/madrs.tsv'", "field 'total'", "expected"],
        "results/sites/keio_hc/clinical_scores.parquet",
        "results/tables/clinical_scores.parquet",
    ),
    # (scenario, bad site, change, message parts, a good site's per-site table, the consortium
    # table that must not be built from partial input)
    (
        "ieeg_small",
        "site_b_ieeg",
        _onsets_in_ms,
        ["site 'site_b_ieeg'", "_events.tsv'", "field 'onset'", "expected"],
        "results/sites/site_a_ieeg/ieeg_responses.parquet",
        "results/tables/ieeg_responses.parquet",
    ),
    (
        "behaviour_small",
        "lab_dlc_mice",
        _tracking_cut_short,
        ["site 'lab_dlc_mice'", "DLC_resnet50", "expected"],
        "results/sites/lab_nwb_mice/behaviour_puffs.parquet",
        "results/tables/behaviour_puffs.parquet",
    ),
]


@pytest.mark.parametrize("case", BAD_SITES, ids=[c[1] for c in BAD_SITES])
def test_one_bad_site_fails_alone_through_the_workflow(tmp_path: Path, case) -> None:
    """The bad site's job fails with one message, the others finish, and no consortium table is
    built from the sites that remain (with tests/test_workflow.py's participants.tsv, revision and
    corrupt-image cases, and tests/test_slurm.py's, the workflow-level bad-site cases)."""
    scenario, site, change, parts, good, consortium = case
    registry = broken_registry(tmp_path, {site: change}, scenario)

    def real_registry(config: dict) -> None:
        del config["demo"]
        for entry in [*config["sites"], *([config["atlas"]] if config.get("atlas") else [])]:
            entry["registry"] = str(registry)

    project = make_project(tmp_path / "p", scenario=scenario, config_edit=real_registry)
    out = _snakemake(project)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    errors = [line for line in text.splitlines() if line.startswith("ERROR ketamap:")]
    assert errors and all(p in errors[0] for p in parts), errors or text[-3000:]
    assert "Traceback" not in text
    assert (project / good).is_file()
    from ketamap import schemas

    schemas.read_table(project / good, Path(good).stem)
    assert not (project / consortium).exists()
