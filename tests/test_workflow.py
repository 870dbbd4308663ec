"""The real workflow: Snakemake runs every rule, DVC moves the data through real local remotes.

Each project is a copy of the workflow files in a temporary folder with a small scenario, so the
tests never touch the checkout's own results.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO
from ketamap import schemas, synth
from ketamap.demo import apply_analysis_options
from ketamap.harmonize import scatter
from ketamap.ids import pseudonymize
from ketamap.recovery import compare
from ketamap.synth.ieeg_signal import slow_half_power_width
from workflow_project import TABLES, broken_registry, hashes, make_project
from workflow_project import run as _run

DEMO_KEY = yaml.safe_load((REPO / "config/config.yaml").read_text())["pseudonymization"][
    "demo_key"
].encode()

pytestmark = pytest.mark.e2e


def snakemake(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(
        ["snakemake", "--profile", "workflow/profiles/default", "--cores", "2", *args],
        project,
        check,
    )


def job_counts(output: str) -> dict[str, int]:
    stats = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_dry_run_plans_every_step(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    out = snakemake(project, "--dry-run").stdout
    assert job_counts(out) == {
        "demo_synth": 1,
        "demo_registry": 1,
        "fetch": 3,
        "fetch_atlas": 1,
        "harmonize_clinical": 3,
        "harmonize_pet": 3,
        "combine_table": 4,
        "pooled_clinical": 1,
        "pooled_pet": 4,
        "figure_change_scatter": 1,
        "figure_pet_batches": 1,
        "manifest": 1,
        "all": 1,
        "total": 25,
    }


def test_slurm_profile_plans_the_same_jobs(tmp_path: Path) -> None:
    """Every rule declares threads and resources, so the SLURM profile needs no rule changes."""
    project = make_project(tmp_path / "p")
    out = _run(["snakemake", "--profile", "workflow/profiles/slurm", "--dry-run"], project)
    assert job_counts(out.stdout)["total"] == 25
    for rule in (
        "fetch",
        "harmonize_clinical",
        "harmonize_pet",
        "combine_table",
        "pooled_clinical",
        "pooled_pet",
        "manifest",
    ):
        assert re.search(
            rf"(?:rule|checkpoint) {rule}:(?:(?!\n\n).)*resources: [^\n]*mem_mb=\d+[^\n]*runtime=\d+",
            out.stdout,
            re.S,
        ), rule


def test_scenario_override_derives_the_sites(tmp_path: Path) -> None:
    """`make run SCENARIO=...` passes `--config scenario=...`: the scenario, not the listed sites, decides."""
    project = make_project(tmp_path / "p")
    out = snakemake(project, "--dry-run", "--config", "scenario=config/scenarios/ieeg_small.yaml")
    counts = job_counts(out.stdout)
    assert counts["fetch"] == 2 and counts["harmonize_ieeg"] == 2 and "harmonize_pet" not in counts
    assert "pooled_clinical" not in counts  # no site scores symptoms


def test_lint_finds_nothing_but_the_deliberate_lock_file_environment(tmp_path: Path) -> None:
    """Rules use the lock-file venv instead of per-rule conda envs; every other lint must be clean."""
    project = make_project(tmp_path / "p")
    out = snakemake(project, "--lint", check=False)
    lints = set(re.findall(r"^\s+\* (.+?):?$", out.stdout + out.stderr, re.M))
    assert lints and lints <= {
        "Specify a conda environment or container for each rule.:",
        "Specify a conda environment or container for each rule.",
    }


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["sites"][0].__setitem__("revison", "v1"), r"revison"),
        (
            lambda c: c["clinical"].__setitem__("remission_threshold", "ten"),
            r"remission_threshold|'ten' is not of type 'number'",
        ),
        (
            lambda c: c["sites"][0]["reader"].__setitem__("visits", {"ses-pre": "week2"}),
            r"'week2' is not one of \['baseline', 'post'\]",
        ),
        (
            lambda c: c["sites"].append(dict(c["sites"][0])),
            r"site ids \['ycu_rct'\] are listed more than once",
        ),
    ],
)
def test_bad_config_stops_at_parse_time_naming_the_key(tmp_path: Path, edit, match) -> None:
    project = make_project(tmp_path / "p", config_edit=edit)
    out = snakemake(project, "--dry-run", check=False)
    assert out.returncode != 0
    assert re.search(match, out.stdout + out.stderr), out.stderr[-2000:]


def test_tables_match_their_schemas(pipeline: dict) -> None:
    project = pipeline["project"]
    for rel, table in TABLES.items():
        df = schemas.read_table(project / rel, table)  # checks table name and version
        spec = schemas.get_table(table)
        assert list(df.columns) == spec.field_names
        assert pq.read_schema(project / rel).equals(spec.arrow_schema(), check_metadata=False)
        schemas.to_arrow(df, table)  # revalidates values, bounds and keys
    subjects = schemas.read_table(project / "results/tables/subjects.parquet", "subjects")
    scen = synth.load_scenario(project / "config/scenarios/small.yaml")
    assert len(subjects) == sum(
        sum(g.get("arms", {}).values()) + g.get("n", 0)
        for s in scen["sites"]
        for g in s["groups"].values()
    )


def test_planted_clinical_effect_is_recovered(pipeline: dict) -> None:
    project = pipeline["project"]
    truth = project / "resources/demo/sites/ground_truth.json"
    rec = compare(truth, project / "results/pooled")
    assert rec["found"].all()
    diff = rec[rec["term"] == "arm_difference"].iloc[0]
    assert diff["value"] < 0 and diff["estimate"] < 0 and diff["covered"], diff.to_dict()
    assert diff["q_value"] < 0.05
    clinical = rec[rec["analysis"] == "clinical.madrs_change"]
    assert clinical["covered"].mean() >= 0.75  # nine intervals at 95 %: most cover their truth


def test_planted_pet_effects_are_recovered_without_false_positives(pipeline: dict) -> None:
    project = pipeline["project"]
    rec = compare(project / "resources/demo/sites/ground_truth.json", project / "results/pooled")
    pet = rec[rec["analysis"].str.startswith("pet.")]
    assert pet["found"].all()
    planted = pet[(pet["value"] != 0) & (pet["unit"] != "AUC")]
    assert len(planted) >= 10
    key = ["analysis", "region", "value", "estimate", "ci_low", "ci_high", "q_value"]
    for analysis in ("pet.baseline_trd_vs_hc", "pet.ketamine_x_time"):
        effects = planted[planted["analysis"] == analysis]
        assert effects["covered"].all() and effects["sign_ok"].all(), effects[key].to_string()
        strong = effects[
            effects["value"].abs() >= 4
            if analysis == "pet.ketamine_x_time"
            else effects["value"].abs() > 0.1
        ]
        assert (strong["q_value"] < 0.05).all(), strong[key].to_string()
    assert planted["sign_ok"].mean() >= 0.9
    assert pet["null_ok"].all(), pet[~pet["null_ok"]][
        key
    ].to_string()  # no planted null is significant
    assert pet["covered"].mean() >= 0.85
    baseline = schemas.read_table(
        project / "results/pooled/pet.baseline_trd_vs_hc.parquet", "pooled_result"
    )
    # The RCT shares scanner_a with the Keio controls; scanner_b holds controls only.
    assert baseline["note"].str.startswith("partially confounded").all()
    assert "batch fixed effects" not in baseline["method"].iloc[0]  # one informative batch
    sessions = schemas.read_table(project / "results/tables/pet_sessions.parquet", "pet_sessions")
    assert set(sessions["source_units"]) >= {"Bq/mL", "kBq/mL"}
    for figure in (
        "pet.baseline_trd_vs_hc.png",
        "pet.ketamine_x_time.png",
        "pet.change_vs_improvement.scatter.png",
        "pet.batches.png",
    ):
        assert (project / "results/figures" / figure).read_bytes()[:4] == b"\x89PNG"


def test_manifest_records_revisions_and_hashes(pipeline: dict) -> None:
    project = pipeline["project"]
    manifest = json.loads((project / "results/manifest.json").read_text())
    assert [s["site"] for s in manifest["sites"]] == ["atlas", "keio_hc", "ycu_obs", "ycu_rct"]
    tag_commit = _run(
        ["git", "rev-parse", "v1^{commit}"], project / "resources/demo/registry"
    ).stdout.strip()
    for site in manifest["sites"]:
        assert (
            site["revision"] == "v1"
            and site["commit"] == tag_commit
            and site["dvc_md5"].endswith(".dir")
        )
    for out in manifest["outputs"]:
        assert out["sha256"] == hashlib.sha256((project / out["path"]).read_bytes()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", manifest["code_commit"])


def test_no_site_identifier_or_key_reaches_an_output(pipeline: dict) -> None:
    project = pipeline["project"]
    local_ids = set()
    for tsv in (project / "resources/raw").glob("*/participants.tsv"):
        local_ids |= {line.split("\t")[0] for line in tsv.read_text().splitlines()[1:]}
    assert local_ids
    blobs = [p.read_bytes() for p in (project / "results").rglob("*") if p.is_file()]
    blobs += [p.read_bytes() for p in (project / "logs").rglob("*") if p.is_file()]
    for blob in blobs:
        assert b"ketamap-demo-key" not in blob
        for local in local_ids:
            assert local.encode() not in blob, local


def test_local_run_steps_ran_in_the_fork_server(pipeline: dict) -> None:
    """jobs.forkserver (default): `dvc repro` ran Snakemake three times. The tables' and the
    pooled stages' runs each started a server while planning, which imported the libraries once
    (between jobs) and whose children ran the jobs' steps; the manifest's run (one job) stopped
    its server before its job. Every server said how far it got when its run stopped it, and no
    server outlives its run."""
    project = pipeline["project"]
    server_log = (project / ".snakemake/log/ketamap-forkserver.log").read_text()
    assert server_log.count("listening") >= 2, server_log
    assert server_log.count("forkserver: stopped;") == server_log.count("listening"), server_log
    # the tables' run had time to import everything
    assert re.search(r"forkserver: \d+ modules imported in [0-9.]+ s", server_log), server_log
    forked = [
        log.relative_to(project / "logs").parts[0]
        for log in (project / "logs").rglob("*.log")
        if log.read_text().rstrip().endswith(", in the fork server")
    ]
    assert "pooled" in forked or "figures" in forked, forked
    assert "manifest.log" not in forked
    running = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if b"ketamap.jobserver" in (proc / "cmdline").read_bytes():
                running += [proc.name] if Path(os.readlink(proc / "cwd")) == project else []
    assert not running, f"fork servers of the finished run still run: {running}"


def test_second_run_plans_nothing_and_changes_nothing(pipeline: dict) -> None:
    project = pipeline["project"]
    out = snakemake(project, "--dry-run")
    assert "Nothing to be done" in out.stdout + out.stderr
    snakemake(project)
    assert hashes(project) == pipeline["hashes"]
    assert "up to date" in _run(["dvc", "status"], project).stdout.lower()


def _site_table_mtimes(project: Path) -> dict[str, int]:
    return {
        str(p.relative_to(project)): p.stat().st_mtime_ns
        for p in sorted((project / "results/sites").rglob("*.parquet"))
    }


def test_comment_edit_and_identical_refetch_rerun_nothing(pipeline: dict) -> None:
    """Issue 11: reruns follow content. A comment in the scenario plans nothing; refetching the
    same bytes runs the fetches and nothing after them; other fetched bytes rerun their site."""
    project = pipeline["project"]
    scenario = project / "config/scenarios/small.yaml"
    original = scenario.read_bytes()
    scenario.write_bytes(b"# a comment a partner added\n" + original.replace(b"\n", b"  \n", 3))
    try:
        out = snakemake(project, "--dry-run")
        assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]
    finally:
        scenario.write_bytes(original)

    # A refetch plans nothing after the fetches (the manifest records them)...
    planned = job_counts(
        snakemake(project, "--dry-run", "--forcerun", "fetch", "fetch_atlas").stdout
    )
    assert set(planned) == {"fetch", "fetch_atlas", "manifest", "all", "total"}, planned
    # ... and running it re-harmonizes nothing. (With fetches running in parallel, Snakemake
    # 9.27 re-plans while a sibling fetch has removed its outputs and may rerun the combine and
    # pooled jobs, which write the same bytes; run one at a time, nothing after them runs.)
    before = _site_table_mtimes(project)
    raw = project / "resources/raw/ycu_rct"
    fetched_at = raw.stat().st_mtime_ns
    snakemake(project, "--forcerun", "fetch", "fetch_atlas")
    assert raw.stat().st_mtime_ns != fetched_at  # the fetch did run
    assert _site_table_mtimes(project) == before  # and no harmonization after it
    assert hashes(project) == pipeline["hashes"]
    out = snakemake(project, "--dry-run")
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]

    # Other bytes fetched for one site (its content id changes): that site reruns, no other.
    content = project / "resources/raw/keio_hc.content"
    kept = content.read_bytes()
    content.write_text("0" * 32 + "\n")
    try:
        out = snakemake(project, "--dry-run")
        got = job_counts(out.stdout)
        assert got["harmonize_clinical"] == 1 and got["harmonize_pet"] == 1, out.stdout[-3000:]
        assert "fetch" not in got and "demo_synth" not in got
    finally:
        content.write_bytes(kept)
    out = snakemake(project, "--dry-run")
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]


def _reordered(value):
    """The same config with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def _site(config: dict, site_id: str) -> dict:
    return next(s for s in config["sites"] if s["id"] == site_id)


def _set_reader_option(config: dict) -> dict:
    # a reader option the demo scenario leaves to its default (the others must match the scenario)
    _site(config, "keio_hc")["reader"]["sex_codes"] = {"1": "male", "2": "female"}
    return config


def _set_response_fraction(config: dict) -> dict:
    config["clinical"]["response_fraction"] = 0.6
    return config


def _set_min_per_class(config: dict) -> dict:
    config["analyses"]["pet.response_prediction"]["min_per_class"] = 5
    return config


def _set_fetch_timeout(config: dict) -> dict:
    config["fetch"] = {"timeout": 45}
    return config


def _set_pet_window(config: dict) -> dict:
    config["pet"]["window_min"] = [30, 60]
    return config


def _set_seed(config: dict) -> dict:
    config["seed"] = 7
    return config


# Issue 11: a config edit reruns the jobs that read the edited key (and, since their outputs are
# remade, the jobs downstream of them), and nothing else.
@pytest.mark.parametrize(
    ("edit", "planned", "not_planned"),
    [
        # params are compared as text: the same config in another key order must plan nothing
        (_reordered, {}, ()),
        # a reader option re-harmonizes its site (and what is downstream), never re-downloads it
        (_set_reader_option, {"harmonize_clinical": 1}, ("fetch", "fetch_atlas", "demo_synth")),
        # read by the clinical analysis and by PET response prediction, not the 3 other PET analyses
        (_set_response_fraction, {"pooled_clinical": 1, "pooled_pet": 1}, ()),
        # the prediction question is read by that one PET analysis only
        (_set_min_per_class, {"pooled_pet": 1}, ()),
        # how this machine reaches the remotes changes no data
        (_set_fetch_timeout, {}, ()),
        # a quantification option re-harmonizes every PET site, never a fetch or the clinical tables
        (_set_pet_window, {"harmonize_pet": 3}, ("fetch", "fetch_atlas", "harmonize_clinical")),
        # only the cross-species bootstrap reads the seed, and this consortium has no mice
        (_set_seed, {}, ()),
    ],
    ids=[
        "key_order",
        "reader.sex_codes",
        "clinical.response_fraction",
        "analyses.pet.response_prediction.min_per_class",
        "fetch.timeout",
        "pet.window_min",
        "seed",
    ],
)
def test_config_edit_reruns_only_its_consumers(
    pipeline: dict, edit, planned: dict, not_planned: tuple
) -> None:
    project = pipeline["project"]
    path = project / "config/config.yaml"
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_text(yaml.safe_dump(edit(yaml.safe_load(original)), sort_keys=False))
        out = snakemake(project, "--dry-run")
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    text = out.stdout + out.stderr
    got = {} if "Nothing to be done" in text else job_counts(out.stdout)
    for key in ("all", "total", "manifest"):  # the manifest records the whole config, by design
        got.pop(key, None)
    if not_planned:
        assert got.items() >= planned.items(), out.stdout[-3000:]
        assert not set(not_planned) & set(got), out.stdout[-3000:]
    else:
        assert got == planned, out.stdout[-3000:]


def _fresh_shell() -> dict[str, str]:
    """The environment of a new terminal: no virtualenv activated, none of its bin on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if "/.venv/" not in p + "/"
    )
    env.pop("KETAMAP_PSEUDONYM_KEY", None)
    return env


def _sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, cwd=cwd, env=_fresh_shell(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def test_lab_and_partner_share_results_through_dvc(tmp_path: Path) -> None:
    """The partner flow of the README, each clone with its own install, from fresh shells: the lab
    runs `dvc repro`, pushes its results and commits dvc.lock; a partner clones, runs `make
    setup` and `dvc pull`. Both are clean, nothing reruns anywhere, every byte is the same."""
    lab = tmp_path / "lab"
    _run(["git", "clone", "-q", str(REPO), str(lab)], tmp_path)
    config = yaml.safe_load((lab / "config/config.yaml").read_text())
    config["demo"]["scenario"] = "config/scenarios/small.yaml"
    scen = synth.load_scenario(lab / "config/scenarios/small.yaml")
    config["sites"] = synth.site_configs(
        scen, config["demo"]["registry"], config["demo"]["release"]
    )
    apply_analysis_options(config, synth.analysis_options(scen))
    (lab / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    git = ["git", "-c", "user.name=lab", "-c", "user.email=lab@example.org"]
    _sh([*git, "commit", "-qam", "the lab's consortium"], lab)
    _sh(["make", "setup"], lab)
    _sh([".venv/bin/dvc", "repro"], lab)  # not through make: dvc.yaml finds the venv itself
    remote = tmp_path / "results-remote"
    _sh([".venv/bin/dvc", "remote", "modify", "--local", "results", "url", str(remote)], lab)
    _sh([".venv/bin/dvc", "push", "-q"], lab)
    _sh([*git, "add", "dvc.lock"], lab)
    _sh([*git, "commit", "-qm", "results"], lab)
    lab_hashes = hashes(lab)
    assert "up to date" in _sh([".venv/bin/dvc", "status"], lab).stdout.lower()
    again = _sh(["make", "repro"], lab).stdout
    assert "didn't change, skipping" in again and "Running stage" not in again, again
    assert _sh(["git", "status", "--porcelain"], lab).stdout.strip() == ""  # dvc.lock unchanged

    partner = tmp_path / "partner"
    _run(["git", "clone", "-q", str(lab), str(partner)], tmp_path)
    _sh(["make", "setup"], partner)
    _sh([".venv/bin/dvc", "remote", "modify", "--local", "results", "url", str(remote)], partner)
    _sh([".venv/bin/dvc", "pull", "-q"], partner)
    assert hashes(partner) == lab_hashes
    assert not (partner / "resources").exists()  # nothing was fetched or recomputed
    assert "up to date" in _sh([".venv/bin/dvc", "status"], partner).stdout.lower()
    run = _sh(["make", "run"], partner).stdout
    assert "nothing to run" in run and not (partner / "resources").exists(), run
    assert "didn't change, skipping" in _sh([".venv/bin/dvc", "repro"], partner).stdout
    assert _sh(["git", "status", "--porcelain"], partner).stdout.strip() == ""
    assert hashes(partner) == lab_hashes
    metrics = _sh([".venv/bin/dvc", "metrics", "show", "--json"], partner).stdout
    assert "arm_difference_madrs" in metrics


def test_clean_rerun_is_byte_identical(pipeline: dict, tmp_path: Path) -> None:
    """Everything rebuilt from scratch elsewhere (synth, registry, fetch, tables) gives the same bytes."""
    again = make_project(tmp_path / "again")
    snakemake(again)
    got, want = hashes(again), pipeline["hashes"]
    for rel in TABLES:
        assert got[rel] == want[rel], rel
    # The demo registry's commits are deterministic: the same manifest apart from the code commit
    # (this copy is not a git checkout).
    manifests = [
        json.loads((p / "results/manifest.json").read_text()) for p in (again, pipeline["project"])
    ]
    for m in manifests:
        m.pop("code_commit")
    assert manifests[0] == manifests[1]


def test_null_scenario_is_not_significant(tmp_path: Path) -> None:
    project = make_project(tmp_path / "null", scenario="null")
    snakemake(project)
    rec = compare(project / "resources/demo/sites/ground_truth.json", project / "results/pooled")
    diffs = rec[rec["term"].str.endswith("_difference")]
    assert (diffs["value"] == 0).all()
    assert diffs["null_ok"].all() and diffs["covered"].all(), diffs.to_dict("records")
    pet = rec[rec["analysis"].str.startswith("pet.")]
    assert len(pet) > 50 and (pet["value"].where(pet["unit"] != "AUC", 0) == 0).all()
    assert pet["null_ok"].all(), pet[~pet["null_ok"]].to_dict("records")


def test_confounded_design_is_flagged_and_not_estimated(tmp_path: Path) -> None:
    """Issue 9, finding 1: patients on scanner_a, controls on another device of the same make and
    model. The batch (serial) tells them apart: no estimate, interval or p, and the log, the
    result rows and the figure say why."""
    scenario = yaml.safe_load((REPO / "config/scenarios/small.yaml").read_text())
    twin = dict(next(s for s in scenario["pet"]["scanners"] if s["id"] == "scanner_a"))
    twin.update(id="scanner_twin", suvr_offset_mul=0.95)
    scenario["pet"]["scanners"].append(twin)
    for site in scenario["sites"]:
        site["pet"]["scanner"] = "scanner_a" if "trd" in site["groups"] else "scanner_twin"
    scenario["name"] = "confounded"

    def use(config: dict) -> None:
        config["demo"]["scenario"] = "config/scenarios/confounded.yaml"

    project = make_project(tmp_path / "p", config_edit=use)
    (project / "config/scenarios/confounded.yaml").write_text(
        yaml.safe_dump(scenario, sort_keys=False)
    )
    snakemake(project, "results/pooled/pet.baseline_trd_vs_hc.parquet")
    result = schemas.read_table(
        project / "results/pooled/pet.baseline_trd_vs_hc.parquet", "pooled_result"
    )
    assert result["note"].str.startswith("fully confounded").all()
    for col in ("estimate", "ci_low", "ci_high", "statistic", "p_value"):
        assert result[col].isna().all(), col
    regional = schemas.read_table(project / "results/tables/pet_regional.parquet", "pet_regional")
    assert regional["scanner"].nunique() == 1 and regional["batch"].nunique() == 2
    log = (project / "logs/pooled/pet.baseline_trd_vs_hc.log").read_text()
    assert "fully confounded" in log
    assert (project / "results/figures/pet.baseline_trd_vs_hc.png").stat().st_size > 5000


def _decoded(path: Path) -> bytes:
    """A file's bytes, and for Parquet also its decoded values (compression hides strings)."""
    blob = path.read_bytes()
    if path.suffix == ".parquet":
        blob += pq.read_table(path).to_pandas().to_csv().encode()
    return blob


def test_partial_sites_run_what_their_data_has(tmp_path: Path) -> None:
    """Issue 9's layouts end to end (config/scenarios/partial_sites.yaml) through `make run
    SCENARIO=...`'s Snakemake call: two RCTs with dropouts, a control-only second device of the
    RCT's scanner model, a patient-only scanner, a site with symptom scores but no PET, and a
    scenario remission threshold of 12."""
    project = make_project(tmp_path / "p")
    scenario = "config/scenarios/partial_sites.yaml"
    counts = job_counts(snakemake(project, "--dry-run", "--config", f"scenario={scenario}").stdout)
    assert counts["harmonize_clinical"] == 5 and counts["harmonize_pet"] == 4
    snakemake(project, "--config", f"scenario={scenario}")
    assert not (project / "results/sites/osaka_scores/pet_regional.parquet").exists()
    subjects = schemas.read_table(project / "results/tables/subjects.parquet", "subjects")
    assert (subjects["site"] == "osaka_scores").sum() == 10
    pooled = project / "results/pooled"
    clinical = schemas.read_table(pooled / "clinical.madrs_change.parquet", "pooled_result")
    remission = clinical[clinical["term"].str.startswith("remission")]
    assert remission["method"].str.contains("remission = post MADRS <= 12").all()
    assert "trial fixed effects" in clinical.set_index("term").loc["arm_difference", "method"]
    baseline = schemas.read_table(pooled / "pet.baseline_trd_vs_hc.parquet", "pooled_result")
    note = baseline["note"].iloc[0]
    assert note.startswith("partially confounded: 2 batch(es)"), note
    assert "Siemens Biograph mCT (device" in note and ": hc" in note and ": trd" in note
    ket = schemas.read_table(pooled / "pet.ketamine_x_time.parquet", "pooled_result")
    assert ket["note"].str.contains("without a post scan contribute their baseline").all()
    assert not ket["note"].str.contains("converge|Hessian").any()
    rec = compare(project / "resources/demo/sites/ground_truth.json", pooled)
    assert rec["found"].all(), rec[~rec["found"]][["analysis", "term", "arm", "region"]]
    # The remission rate is the one at the scenario's threshold (12), not the config's (10).
    scores = schemas.read_table(
        project / "results/tables/clinical_scores.parquet", "clinical_scores"
    )
    post = scores[scores["visit"] == "post"].set_index("subject_id")["madrs_equivalent"]
    arms = subjects.set_index("subject_id")["arm"]
    ket = post[arms.reindex(post.index) == "ketamine"]
    rate = clinical.set_index(["term", "arm"]).loc[("remission_rate", "ketamine"), "estimate"]
    assert rate == pytest.approx((ket <= 12).mean()) and (ket <= 12).mean() != (ket <= 10).mean()
    key = ["analysis", "region", "value", "estimate", "ci_low", "ci_high", "q_value"]
    pet = rec[rec["analysis"].str.startswith("pet.") & (rec["unit"] != "AUC")]
    planted = pet[pet["value"] != 0]
    ketamine = planted[planted["analysis"] == "pet.ketamine_x_time"]
    assert ketamine["covered"].all() and ketamine["sign_ok"].all(), ketamine[key].to_string()
    assert pet["null_ok"].all(), pet[~pet["null_ok"]][key].to_string()
    prediction = schemas.read_table(pooled / "pet.response_prediction.parquet", "pooled_result")
    assert (prediction["arm"] == "ketamine").all() and set(prediction["region"]) == {"habenula"}
    # Serials and institutions of the scanners (canaries) reach no table, figure or log.
    canaries = json.loads((project / "resources/demo/sites/ground_truth.json").read_text())[
        "canaries"
    ]
    assert any(c.startswith("PET-") for c in canaries)
    for path in [*(project / "results").rglob("*"), *(project / "logs").rglob("*")]:
        if path.is_file():
            blob = _decoded(path)
            for canary in canaries:
                assert canary.encode() not in blob, (path, canary)


def test_consortium_without_pet_plans_no_atlas_and_no_pet_job(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    scenario = "config/scenarios/clinical_only.yaml"
    counts = job_counts(snakemake(project, "--dry-run", "--config", f"scenario={scenario}").stdout)
    assert "fetch_atlas" not in counts and "harmonize_pet" not in counts
    assert "pooled_pet" not in counts and counts["pooled_clinical"] == 1
    snakemake(project, "--config", f"scenario={scenario}")
    result = schemas.read_table(
        project / "results/pooled/clinical.madrs_change.parquet", "pooled_result"
    )
    assert result.set_index("term").loc["arm_difference", "n"] == 20
    assert not (project / "results/tables/pet_regional.parquet").exists()
    manifest = json.loads((project / "results/manifest.json").read_text())
    assert [s["site"] for s in manifest["sites"]] == ["keio_hc", "ycu_rct"]


def _drop_column(path: Path, column: str) -> None:
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    idx = lines[0].index(column)
    path.write_text(
        "\n".join("\t".join(c for i, c in enumerate(row) if i != idx) for row in lines) + "\n"
    )


def test_bad_site_fails_alone_with_one_clear_message(tmp_path: Path) -> None:
    registry = broken_registry(
        tmp_path, {"keio_hc": lambda d: _drop_column(d / "participants.tsv", "sex")}
    )

    def real_registry(config: dict) -> None:
        del config["demo"]
        for site in config["sites"]:
            site["registry"] = str(registry)
        config["sites"][0]["revision"] = "v9"  # ycu_rct pins a release the registry does not have

    project = make_project(tmp_path / "p", config_edit=real_registry)
    out = snakemake(project, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "site 'keio_hc', file 'participants.tsv', field 'sex': missing required column" in text
    assert re.search(
        r"site 'ycu_rct', file '[^']*registry', field 'revision': revision 'v9' is not in the registry; expected one of the registry's tags \['v1'\]",
        text,
    )
    assert "Traceback" not in (project / "logs/harmonize/keio_hc.clinical.log").read_text()
    # The good site finished; nothing consortium-wide was written from partial input.
    assert (project / "results/sites/ycu_obs/subjects.parquet").is_file()
    assert not (project / "results/sites/keio_hc/subjects.parquet").exists()
    assert not (project / "resources/raw/ycu_rct").exists()
    assert not (project / "results/tables/subjects.parquet").exists()


def test_corrupt_pet_image_fails_its_site_alone(tmp_path: Path) -> None:
    def corrupt_first_image(site_dir: Path) -> None:
        image = sorted(site_dir.rglob("*_pet.nii.gz"))[0]
        image.write_text("<!DOCTYPE html><html><body>Moved</body></html>")

    registry = broken_registry(tmp_path, {"ycu_obs": corrupt_first_image})

    def real_registry(config: dict) -> None:
        del config["demo"]
        for entry in [*config["sites"], config["atlas"]]:
            entry["registry"] = str(registry)

    project = make_project(tmp_path / "p", config_edit=real_registry)
    out = snakemake(project, check=False)
    assert out.returncode != 0
    assert re.search(
        r"site 'ycu_obs', file '[^']*_pet\.nii\.gz'.*not a NIfTI image \(looks like HTML\)",
        out.stdout + out.stderr,
    )
    for site in ("ycu_rct", "keio_hc"):
        schemas.read_table(project / f"results/sites/{site}/pet_regional.parquet", "pet_regional")
    assert not (project / "results/sites/ycu_obs/pet_regional.parquet").exists()
    assert not (project / "results/tables/pet_regional.parquet").exists()
    assert (
        project / "results/pooled/clinical.madrs_change.parquet"
    ).is_file()  # clinical did not need the image


def test_ieeg_pipeline_recovers_the_ketamine_effect_and_leaks_no_canary(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    snakemake(project, "--config", "scenario=config/scenarios/ieeg_small.yaml")
    truth_path = project / "resources/demo/sites/ground_truth.json"
    rec = compare(truth_path, project / "results/pooled")
    key = ["analysis", "region_group", "value", "estimate", "ci_low", "ci_high", "q_value"]
    slow = rec[rec["analysis"] == "ieeg.slow_phase_duration"]
    overall = slow[slow["region_group"].fillna("") == ""].iloc[0]
    assert (
        overall["value"] < 0
        and overall["covered"]
        and overall["sign_ok"]
        and overall["q_value"] < 0.05
    ), slow[key]
    fast = rec[rec["analysis"] == "ieeg.fast_phase_latency"]
    assert (fast["value"] == 0).all() and fast["null_ok"].all() and fast["covered"].all(), fast[key]
    durations = schemas.read_table(
        project / "results/pooled/ieeg.slow_phase_duration.parquet", "pooled_result"
    )
    assert durations["method"].str.contains("above 2 z").all()  # the threshold it used
    # Privacy: the EDF patient names planted as canaries reach no table, figure, log or session
    # piece (each recording is read by its own session job, resources/pieces).
    canaries = json.loads(truth_path.read_text())["canaries"]
    assert canaries
    pieces = list((project / "resources/pieces").rglob("*.zip"))
    sessions = [
        (path.parent.parent.name, session)
        for path in pieces
        for session in scatter.read_pieces(path, site=path.parent.parent.name)
    ]
    assert len(sessions) == len(set(sessions)) == 12  # 2 sites x 3 patients x 2 sessions
    for path in [*(project / "results").rglob("*"), *(project / "logs").rglob("*"), *pieces]:
        if path.is_file():
            blob = path.read_bytes()
            for canary in canaries:
                assert canary.encode() not in blob, path
    # Channels the site marked bad are never analysed.
    truth = pd.read_csv(
        project / "resources/demo/sites/ground_truth_ieeg_channels.tsv", sep="\t", dtype=str
    )
    bad = truth[(truth["kind"] == "bipolar") & (truth["status"] != "good")]
    channels = schemas.read_table(project / "results/tables/ieeg_channels.parquet", "ieeg_channels")
    responses = schemas.read_table(
        project / "results/tables/ieeg_responses.parquet", "ieeg_responses"
    )
    assert len(bad) and (channels["channel_status"] != "good").sum() >= len(bad) // 2
    assert set(responses["channel"]) <= set(
        channels.loc[channels["channel_status"] == "good", "channel"]
    )
    for figure in (
        "ieeg.timecourses.png",
        "ieeg.slow_phase_duration.png",
        "ieeg.synchrony.png",
    ):
        assert (project / "results/figures" / figure).read_bytes()[:4] == b"\x89PNG"
    # Synchrony of the slow phase falls under ketamine (planted: lower shared trial gain).
    sync = rec[rec["analysis"] == "ieeg.synchrony"].iloc[0]
    assert sync["found"] and sync["sign_ok"] and sync["covered"], sync[key]
    assert sync["estimate"] < 0 and sync["q_value"] < 0.05, sync[key]
    # Per-channel truths through the whole workflow (fetch, harmonize, combine): the planted
    # responsiveness and slow-phase duration of every analysed bipolar channel.
    planted = truth[(truth["kind"] == "bipolar") & (truth["status"] == "good")].copy()
    planted["subject_id"] = [
        pseudonymize(site, [f"sub-{pid}"], DEMO_KEY)[0]
        for site, pid in zip(planted["site"], planted["participant"], strict=True)
    ]
    both = responses.merge(
        planted, on=["subject_id", "condition", "channel"], suffixes=("", "_true")
    )
    assert len(both) >= 0.9 * len(responses) and len(both) > 100, (len(both), len(responses))
    for kind in ("fast", "slow"):
        agree = (both[f"responsive_{kind}"] == (both[f"responsive_{kind}_true"] == "true")).mean()
        assert agree >= 0.9, (kind, agree)
    slow_both = both[both["responsive_slow"] & (both["responsive_slow_true"] == "true")]
    err = slow_both["slow_duration_s"] - slow_both["slow_duration_s_true"].astype(float)
    print(
        f"slow-duration error over {len(err)} channels (s): "
        f"5 % {err.quantile(0.05):+.3f}, median {err.median():+.3f}, 95 % {err.quantile(0.95):+.3f}"
    )
    # The reader times the slow phase at half its plateau in HFB power, which the planted
    # envelope (half-amplitude width d, logistic edges of 20 ms) reaches 2 asinh(1) x 20 ms =
    # 35 ms inside d (measured on ieeg_small: 5 % -0.074, median -0.035, 95 % -0.004 s; the time
    # above the z threshold used before: -0.60, -0.058, -0.002 s).
    offset = slow_half_power_width(0.7, 0.02) - 0.7
    assert len(err) > 20 and abs(err.median() - offset) < 0.01, err.describe()
    assert ((err - offset).abs() < 0.05).mean() >= 0.9, err.describe()  # measured 0.97


def test_behaviour_and_cross_species_recover_the_planted_effects(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    snakemake(project, "--config", "scenario=config/scenarios/behaviour_small.yaml")
    truth_path = project / "resources/demo/sites/ground_truth.json"
    rec = compare(truth_path, project / "results/pooled")
    key = ["analysis", "term", "species", "measure", "value", "estimate", "ci_low", "ci_high"]
    beh = rec[rec["analysis"].str.match(r"(behaviour|mouse|cross_species)\.")]
    assert beh["found"].all(), beh.loc[~beh["found"], key]
    # Every planted effect and null in both species: interval covers the truth, sign right.
    assert beh["covered"].all() and beh["sign_ok"].all(), beh[[*key, "q_value"]]
    # The eyelid effects and the saline train effect are large for this small scenario; the
    # train x drug interaction (0.15) needs more mice than it has (make run's default has them).
    effects = beh[beh["value"].abs() >= 0.2]
    assert len(effects) >= 5 and (effects["q_value"] < 0.05).all(), effects[[*key, "q_value"]]
    assert beh["null_ok"].all(), beh[[*key, "q_value"]]
    # The reflex blink is equivalent (TOST) in both species.
    reflex = schemas.read_table(
        project / "results/pooled/behaviour.reflex_blink.parquet", "pooled_result"
    )
    tost = reflex[reflex["term"] == "equivalence_tost"]
    assert set(tost["species"]) == {"human", "mouse"} and (tost["p_value"] < 0.05).all(), tost
    # Every row states the windows its measures were made with.
    assert reflex["method"].str.contains(r"reflex window \[0\.0, 0\.15\] s").all()
    # Human and mouse eyelid responses have the same shape; the iEEG rows sit beside them.
    sig = schemas.read_table(
        project / "results/pooled/cross_species.timing_signature.parquet", "pooled_result"
    )
    shape = sig[sig["term"].str.startswith("shape_similarity")]
    assert len(shape) == 2 and (shape["estimate"] > 0.5).all(), shape
    hfb = sig[sig["measure"] == "hfb"].set_index("term")
    assert hfb.loc["ketamine_effect_slow", "ci_high"] < 0, hfb
    assert (
        hfb.loc["ketamine_effect_fast", "ci_low"] <= 0 <= hfb.loc["ketamine_effect_fast", "ci_high"]
    )
    # Tables: both species, mice in subjects, frame rates of both labs.
    puffs = schemas.read_table(
        project / "results/tables/behaviour_puffs.parquet", "behaviour_puffs"
    )
    assert set(puffs["species"]) == {"human", "mouse"}
    # The DLC lab's rate is the one fitted from its puff log (the video clock drifts slightly).
    rates = puffs["frame_rate_hz"].to_numpy()
    for nominal in (30.0, 40.0, 60.0):
        assert (abs(rates / nominal - 1) < 0.01).any(), nominal
    subjects = schemas.read_table(project / "results/tables/subjects.parquet", "subjects")
    mice = subjects[subjects["species"] == "mouse"]
    assert len(mice) and set(mice["group"]) == {"naive"}
    assert set(puffs.loc[puffs["species"] == "mouse", "subject_id"]) <= set(mice["subject_id"])
    for figure in (
        "behaviour.eyelid.png",
        "behaviour.reward.png",
        "behaviour.cross_species.png",
        "mouse.reward_seeking_after_train.png",
    ):
        assert (project / "results/figures" / figure).read_bytes()[:4] == b"\x89PNG"
    # Issue 11: options only the pooled analyses read rerun them, never a fetch or harmonization.
    pooled_only = {
        "scenario": "config/scenarios/behaviour_small.yaml",
        "analyses": {
            "ieeg.fast_phase_latency": {"equivalence_margin_s": 0.05},
            "behaviour.reflex_blink": {"equivalence_margin": 0.2},
            "cross_species.timing_signature": {"bootstrap": 500, "similarity_window_s": [-0.4, 2]},
        },
    }
    (project / "pooled_only.yaml").write_text(yaml.safe_dump(pooled_only))
    edited = snakemake(project, "--dry-run", "--configfile", "pooled_only.yaml").stdout
    planned = job_counts(edited)
    assert planned.get("pooled_ieeg") and planned.get("pooled_behaviour"), edited[-3000:]
    # each option reruns its own analysis only: one iEEG analysis, two behaviour analyses
    assert planned["pooled_ieeg"] == 1 and planned["pooled_behaviour"] == 2, planned
    assert not [r for r in planned if r.startswith(("fetch", "harmonize", "combine"))], planned
    # Privacy: the NWB subject names and EDF patient names reach no output or log.
    canaries = json.loads(truth_path.read_text())["canaries"]
    assert any("Doolittle" in c for c in canaries)
    for path in [*(project / "results").rglob("*"), *(project / "logs").rglob("*")]:
        if path.is_file():
            blob = path.read_bytes()
            for canary in canaries:
                assert canary.encode() not in blob, path


def test_bad_mouse_lab_fails_alone_naming_file_and_field(tmp_path: Path) -> None:
    def empty_lick_log(site_dir: Path) -> None:
        log = sorted(site_dir.rglob("*_licks.csv"))[0]
        log.write_text("time_s\n")

    registry = broken_registry(
        tmp_path, {"lab_dlc_mice": empty_lick_log}, scenario="behaviour_small"
    )

    def real_registry(config: dict) -> None:
        del config["demo"]
        for site in config["sites"]:
            site["registry"] = str(registry)

    project = make_project(tmp_path / "p", scenario="behaviour_small", config_edit=real_registry)
    targets = [
        f"results/sites/{site}/behaviour_puffs.parquet" for site in ("lab_nwb_mice", "lab_dlc_mice")
    ]
    out = snakemake(project, *targets, "results/tables/behaviour_puffs.parquet", check=False)
    assert out.returncode != 0
    assert re.search(
        r"site 'lab_dlc_mice', file '[^']*_licks\.csv', field 'time_s'", out.stdout + out.stderr
    ), (out.stdout + out.stderr)[-3000:]
    # the session job that read the bad lick log failed; its site's gather never ran
    logs = sorted((project / "logs/harmonize/lab_dlc_mice/behaviour").glob("*.log"))
    log = "".join(p.read_text() for p in logs)
    assert logs and "Traceback" not in log and "_licks.csv" in log, logs
    assert not (project / "logs/harmonize/lab_dlc_mice.behaviour.log").exists()
    # The other lab finished; no consortium behaviour table was written from partial input.
    puffs = schemas.read_table(
        project / "results/sites/lab_nwb_mice/behaviour_puffs.parquet", "behaviour_puffs"
    )
    assert len(puffs) and set(puffs["species"]) == {"mouse"}
    assert not (project / "results/sites/lab_dlc_mice/behaviour_puffs.parquet").exists()
    assert not (project / "results/tables/behaviour_puffs.parquet").exists()


# --------------------------------------------------------------- every config key -> its consumers
_FIXED = {("sites", "id"), ("sites", "modality"), ("pet", "pvc")}  # no other valid value here


def _leaves(value, schema, path=()):
    """(path, value, schema) of every leaf of a default-filled config, lists of sites walked."""
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            yield from _leaves(sub, schema["properties"].get(key, {}), (*path, key))
    elif isinstance(value, list) and schema.get("items", {}).get("type") == "object":
        for i, item in enumerate(value):
            yield from _leaves(item, schema["items"], (*path, i))
    else:
        yield path, value, schema


def _another(value, schema):
    """A valid value other than ``value``, or None when there is none."""
    if "enum" in schema:
        others = [v for v in schema["enum"] if v != value]
        return others[0] if others else None
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value * 1.1 + 0.01, 6)
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return [v + 0.01 for v in value]
    if isinstance(value, list):
        return [*value, "acc"]
    if isinstance(value, dict):
        sample = next(iter(value.values()), "x")
        return {**value, "extra": sample if isinstance(sample, str) else "x"}
    return None


def _consumers(config: dict, path: tuple, project: Path) -> set[tuple[str, str]]:
    """The jobs whose params hold ``path``, as declared by the registries (rule, wildcards)."""
    from ketamap.harmonize import HARMONIZERS, scatter, site_groups
    from ketamap.pooled import ANALYSES, planned

    groups = site_groups(config)
    analyses = planned(groups)

    def harmonize_jobs(h, site: str) -> set[tuple[str, str]]:
        # A modality harmonized per session (Harmonizer.sessions: PET, iEEG) has the site entry
        # and its options in the params of its session jobs, batches of the sessions the fetch
        # listed; the dry run gives its gather's reason as their pieces, which it reads, not as
        # params.
        if h.sessions:
            found = scatter.batches(
                project / "resources/raw" / site,
                h.sessions,
                config["jobs"]["session_batch_seconds"],
                h.session_cost,
            )
            return {
                (f"harmonize_{h.modality}_session", f"site={site}, batch={batch}")
                for batch in found
            }
        return {(f"harmonize_{h.modality}", f"site={site}")}

    harmonize = {
        job for h in HARMONIZERS.values() for s in groups[h.sites] for job in harmonize_jobs(h, s)
    }

    def analysis_job(name: str) -> tuple[str, str]:
        spec = ANALYSES[name]
        alone = sum(a.module == spec.module for a in ANALYSES.values()) == 1
        return (spec.rule, "" if alone else f"analysis={name}")

    top = path[0]
    dotted = ".".join(str(p) for p in path[:2])
    if top == "sites":
        site = config["sites"][path[1]]["id"]
        if path[2] in ("registry", "path", "revision"):
            return {("fetch", f"site={site}")}
        return {job for job in harmonize if job[1].split(", ")[0] == f"site={site}"}
    if top == "atlas":
        return {("fetch_atlas", "")}
    if dotted == "fetch.per_session":  # what each site's fetch pulls (the atlas' is always whole)
        return {("fetch", f"site={s['id']}") for s in config["sites"]}
    if top == "pseudonymization":
        return harmonize
    if top == "analyses":
        return {analysis_job(path[1])} if path[1] in analyses else set()
    readers = set()
    for h in HARMONIZERS.values():
        if h.options == top:
            readers |= {job for s in groups[h.sites] for job in harmonize_jobs(h, s)}
    return readers | {
        analysis_job(a) for a in analyses if dotted in ANALYSES[a].reads or top in ANALYSES[a].reads
    }


def _params_changed(output: str) -> set[tuple[str, str]]:
    """The jobs a config edit reruns itself: their params changed, or the edit gave them an output
    they do not have yet (fetch.per_session: the storage plugin's index). Jobs rerun because an
    input was updated by another job are not counted: they follow by their inputs."""
    jobs = set()
    for block in output.split("\n\n"):
        head = re.search(r"^(?:rule|checkpoint) (\w+):", block, re.M)
        if head and ("Params have changed" in block or "Missing output files" in block):
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.add((head.group(1), wildcards.group(1).strip() if wildcards else ""))
    return jobs


def test_every_config_key_reruns_exactly_its_declared_consumers(
    pipeline: dict, tmp_path: Path
) -> None:
    """Issue 11: change each config key in turn; the jobs whose params changed are exactly the
    consumers the registries declare for it (their downstream jobs follow by their inputs).

    Runs on a copy of the finished small consortium with its demo section removed, so no key is
    pinned by the scenario; the fetches that the removal reruns bring the same bytes, so nothing
    after them reruns (content-based triggers) and the copy starts with nothing to do."""
    from concurrent.futures import ThreadPoolExecutor

    from ketamap.config import config_schema, validate_config

    project = tmp_path / "settled"
    shutil.copytree(pipeline["project"], project, symlinks=True)
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    config.pop("demo")
    config = validate_config(config)
    (project / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    tables = {p: sha for p, sha in pipeline["hashes"].items() if p.endswith(".parquet")}
    site_tables = _site_table_mtimes(project)
    snakemake(project)  # reruns the fetches (their registry input changed) and nothing else
    assert _site_table_mtimes(project) == site_tables  # no harmonization ran
    assert {p: sha for p, sha in hashes(project).items() if p in tables} == tables
    out = snakemake(project, "--dry-run")
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]

    cases = []
    for path, value, schema in _leaves(config, config_schema()):
        key = tuple(p for p in path if not isinstance(p, int))
        new = _another(value, schema)
        if key[:2] in _FIXED or (key[0], key[-1]) in _FIXED or new is None:
            continue
        edited = copy.deepcopy(config)
        target = edited
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = new
        cases.append((path, edited))
    assert len(cases) > 40

    def plan(case):
        path, edited = case
        name = "_".join(str(p) for p in path)
        (project / f"{name}.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        result = snakemake(project, "--dry-run", "--configfile", f"{name}.yaml", check=False)
        return path, edited, result

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(plan, cases))
    wrong = []
    for path, edited, result in results:
        text = result.stdout + result.stderr
        if result.returncode != 0:
            wrong.append(f"{path}: dry run failed: {text[-500:]}")
            continue
        want = _consumers(edited, path, project)
        got = set() if "Nothing to be done" in text else _params_changed(result.stdout)
        got.discard(("manifest", ""))  # the manifest records the whole config, by design
        if got != want:
            wrong.append(f"{path}: planned {sorted(got)}, declared {sorted(want)}")
    assert not wrong, "\n".join(wrong)
