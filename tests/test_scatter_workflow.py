"""Many short recordings through per-session jobs, end to end (config/scenarios/ieeg_many_short.yaml):
one harmonize_ieeg_session job per session, one gather per site, tables byte-identical to one job
reading the whole site, and a release that changes one session reruns that session alone."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ketamap import harmonize, synth
from ketamap.config import validate_config
from ketamap.harmonize import scatter
from ketamap.registry import build_registry
from workflow_project import REPO, make_project, run

SCENARIO = "ieeg_many_short"
SITE = "site_short_ieeg"


def _snakemake(project: Path) -> str:
    out = run(["snakemake", "--profile", "workflow/profiles/default", "--cores", "2"], project)
    return out.stdout + out.stderr


def _ran(log: str, rule: str) -> list[dict[str, str]]:
    """The wildcards of every job of ``rule`` the run finished."""
    jobs: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n(?=\[[A-Z][a-z]{2} )", log):
        m = re.search(
            rf"^(?:local)?(?:rule|checkpoint) {rule}:\n(.*?)(?:\n\S|\Z)", block, re.M | re.S
        )
        if m:
            jobid = re.search(r"jobid: (\d+)", m.group(1))
            wildcards = re.search(r"wildcards: (.*)", m.group(1))
            if jobid:
                jobs[jobid.group(1)] = dict(
                    kv.split("=", 1) for kv in (wildcards.group(1).split(", ") if wildcards else [])
                )
    finished = set(re.findall(rf"Finished jobid: (\d+) \(Rule: {rule}\)", log))
    return [w for j, w in jobs.items() if j in finished]


def _whole_site_bytes(project: Path, out: Path) -> dict[str, bytes]:
    """The site's tables as one job reading the whole fetched site computes them."""
    config = validate_config(yaml.safe_load((project / "config/config.yaml").read_text()))
    site = next(s for s in config["sites"] if s["id"] == SITE)
    outputs = {t: str(out / f"{t}.parquet") for t in harmonize.HARMONIZERS["ieeg"].tables}
    harmonize.run("ieeg", site, project / "resources/raw" / SITE, outputs, config)
    return {t: Path(p).read_bytes() for t, p in outputs.items()}


def _drop_last_puff(sites: Path, session: str) -> None:
    sub, ses = scatter.session_folder(session)
    events = sorted((sites / SITE / sub / ses / "ieeg").glob("*_events.tsv"))[0]
    lines = events.read_text().splitlines()
    events.write_text("\n".join(lines[:-1]) + "\n")


def test_many_short_recordings_run_per_session_and_a_release_reruns_one_session(
    tmp_path: Path,
) -> None:
    sites = tmp_path / "sites"
    synth.generate(REPO / f"config/scenarios/{SCENARIO}.yaml", sites)
    registry, remote = tmp_path / "registry", str(tmp_path / "remote")
    build_registry(sites, registry, remote, "v1")

    def real_registry(config: dict) -> None:
        del config["demo"]
        for entry in config["sites"]:
            entry["registry"], entry["revision"] = str(registry), "v1"

    project = make_project(tmp_path / "p", scenario=SCENARIO, config_edit=real_registry)
    log = _snakemake(project)
    raw = project / "resources/raw" / SITE
    sessions = scatter.sessions(raw, "ieeg")
    assert len(sessions) == 24
    ran = _ran(log, "harmonize_ieeg_session")
    assert sorted(w["session"] for w in ran) == sessions, ran
    assert [w["site"] for w in _ran(log, "harmonize_ieeg")] == [SITE]
    assert len(list((project / "resources/pieces" / SITE / "ieeg").glob("*.zip"))) == 24
    site_tables = project / "results/sites" / SITE
    whole = _whole_site_bytes(project, tmp_path / "whole1")
    for table, data in whole.items():
        assert (site_tables / f"{table}.parquet").read_bytes() == data, table
    assert (project / "results/pooled/ieeg.slow_phase_duration.parquet").is_file()

    # A new release that changes one session (its last puff dropped): only that session's job
    # and the site's gather run again, and the tables are again the whole-site job's bytes.
    changed = sessions[5]
    _drop_last_puff(sites, changed)
    build_registry(sites, registry, remote, "v2")
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    for entry in config["sites"]:
        entry["revision"] = "v2"
    (project / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    before = (site_tables / "ieeg_responses.parquet").read_bytes()
    log = _snakemake(project)
    assert [w["session"] for w in _ran(log, "harmonize_ieeg_session")] == [changed], log[-3000:]
    assert len(_ran(log, "harmonize_ieeg")) == 1 and len(_ran(log, "fetch")) == 1
    whole = _whole_site_bytes(project, tmp_path / "whole2")
    for table, data in whole.items():
        assert (site_tables / f"{table}.parquet").read_bytes() == data, table
    assert (site_tables / "ieeg_responses.parquet").read_bytes() != before
