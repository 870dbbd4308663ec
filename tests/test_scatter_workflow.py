"""Many short recordings through session jobs, end to end (config/scenarios/ieeg_many_short.yaml):
short sessions packed into few harmonize_ieeg_session jobs by default, one job per session with
``jobs.session_batch_seconds: 0``, one gather per site, tables byte-identical to one job reading
the whole site whatever the jobs, and a release that changes one session reruns its job alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ketamap import harmonize, integrity, synth
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


def _threads(log: str, rule: str) -> list[int]:
    """The threads of every job of ``rule`` the log plans (Snakemake prints them above 1)."""
    return [
        int(t.group(1)) if (t := re.search(r"^\s+threads: (\d+)$", m.group(1), re.M)) else 1
        for m in re.finditer(rf"^(?:local)?rule {rule}:\n((?:    .*\n)*)", log, re.M)
    ]


FORKSERVER_LOG = ".snakemake/log/ketamap-forkserver.log"


def _whole_site_bytes(project: Path, out: Path, fetch: bool = False) -> dict[str, bytes]:
    """The site's tables as one job reading the whole fetched site computes them; with ``fetch``,
    the site fetched whole at its pinned revision first (the project's own fetch pulled part)."""
    from ketamap.registry import fetch_step

    config = validate_config(yaml.safe_load((project / "config/config.yaml").read_text()))
    site = next(s for s in config["sites"] if s["id"] == SITE)
    raw = project / "resources/raw" / SITE
    if fetch:
        raw = out / SITE
        fetch_step(site, raw, out / f"{SITE}.fetch.json", base=project)
    outputs = {t: str(out / f"{t}.parquet") for t in harmonize.HARMONIZERS["ieeg"].tables}
    harmonize.run("ieeg", site, raw, outputs, config)
    return {t: Path(p).read_bytes() for t, p in outputs.items()}


def _drop_last_puff(sites: Path, session: str) -> None:
    sub, ses = scatter.session_folder(session)
    events = sorted((sites / SITE / sub / ses / "ieeg").glob("*_events.tsv"))[0]
    lines = events.read_text().splitlines()
    events.write_text("\n".join(lines[:-1]) + "\n")


def _release(sites: Path, registry: Path, remote: str, project: Path, tag: str, **jobs) -> None:
    """A new release of the site pinned in the project's config (and the config's ``jobs``)."""
    build_registry(sites, registry, remote, tag)
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    for entry in config["sites"]:
        entry["revision"] = tag
    config["jobs"] = jobs
    (project / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _released_project(tmp_path: Path, **sections: dict) -> tuple[Path, Path, str, Path]:
    """The scenario's sites released as v1 into a real registry, and a project pinning them (the
    config's other ``sections`` as given): (sites, registry, remote, project)."""
    sites = tmp_path / "sites"
    synth.generate(REPO / f"config/scenarios/{SCENARIO}.yaml", sites)
    registry, remote = tmp_path / "registry", str(tmp_path / "remote")
    build_registry(sites, registry, remote, "v1")

    def pin(config: dict) -> None:
        del config["demo"]
        for entry in config["sites"]:
            entry["registry"], entry["revision"] = str(registry), "v1"
        config.update(sections)

    return sites, registry, remote, make_project(tmp_path / "p", SCENARIO, config_edit=pin)


def _assert_whole_site_bytes(project: Path, out: Path, fetch: bool = False) -> None:
    site_tables = project / "results/sites" / SITE
    for table, data in _whole_site_bytes(project, out, fetch).items():
        assert (site_tables / f"{table}.parquet").read_bytes() == data, table


def test_many_short_recordings_run_through_session_jobs_and_a_release_reruns_one_session(
    tmp_path: Path,
) -> None:
    # Whole-site fetches (fetch.per_session: false): the session jobs read the fetched site.
    # The first run without the fork server (jobs.forkserver: false: every step in its own job
    # process), the releases after it with it (the default): the same bytes as one process
    # reading the whole site, either way.
    sites, registry, remote, project = _released_project(
        tmp_path,
        fetch={"per_session": False},
        jobs={"session_threads": 2, "forkserver": False},
    )
    pieces = project / "resources/pieces" / SITE / "ieeg"
    # The default: 24 short recordings (a few MB) are far less than one job's worth of work, so
    # they are packed into one session job.
    log = _snakemake(project)
    raw = project / "resources/raw" / SITE
    sessions = scatter.sessions(raw, "ieeg")
    assert len(sessions) == 24
    ran = _ran(log, "harmonize_ieeg_session")
    assert [w["batch"] for w in ran] == [f"{sessions[0]}--{sessions[-1]}"], ran
    assert [w["site"] for w in _ran(log, "harmonize_ieeg")] == [SITE]
    assert [p.name for p in pieces.glob("*.zip")] == [f"{ran[0]['batch']}.zip"]
    # jobs.session_threads: 2 (the default is 1, below)
    assert _threads(log, "harmonize_ieeg_session") == [2], log[-3000:]
    _assert_whole_site_bytes(project, tmp_path / "whole1")
    assert not (project / FORKSERVER_LOG).exists()  # jobs.forkserver: false started none
    assert (project / "results/pooled/ieeg.slow_phase_duration.parquet").is_file()

    # One job per session (jobs.session_batch_seconds 0), and a new release that changes one
    # session (its last puff dropped): 24 session jobs, then the whole-site job's bytes again.
    changed = sessions[5]
    _drop_last_puff(sites, changed)
    _release(sites, registry, remote, project, "v2", session_batch_seconds=0)
    before = (project / "results/sites" / SITE / "ieeg_responses.parquet").read_bytes()
    log = _snakemake(project)
    assert sorted(w["batch"] for w in _ran(log, "harmonize_ieeg_session")) == sessions
    assert _threads(log, "harmonize_ieeg_session") == [1] * 24  # the default
    assert sorted(p.stem for p in pieces.glob("*.zip")) == sorted(sessions)
    _assert_whole_site_bytes(project, tmp_path / "whole2")
    assert "listening" in (project / FORKSERVER_LOG).read_text()  # the default: it ran
    after = (project / "results/sites" / SITE / "ieeg_responses.parquet").read_bytes()
    assert after != before

    # Another release changing one session: only that session's job and the site's gather run.
    changed = sessions[9]
    _drop_last_puff(sites, changed)
    _release(sites, registry, remote, project, "v3", session_batch_seconds=0)
    log = _snakemake(project)
    assert [w["batch"] for w in _ran(log, "harmonize_ieeg_session")] == [changed], log[-3000:]
    assert len(_ran(log, "harmonize_ieeg")) == 1 and len(_ran(log, "fetch")) == 1
    _assert_whole_site_bytes(project, tmp_path / "whole3")


def _cached_objects(project: Path) -> set[str]:
    """The md5 of every object the DVC storage plugin pulled into the project's cache."""
    cache = project / "resources/dvc-storage-cache/md5"
    return {f"{p.parent.name}{p.name}" for p in cache.glob("*/*") if p.is_file()}


def test_per_session_fetch_pulls_each_session_through_the_dvc_storage_plugin(
    tmp_path: Path,
) -> None:
    """fetch.per_session: the fetch pulls the site's own files and lists the sessions; each session
    job retrieves its session folder through the DVC storage plugin (storage.ketamap_<site>). The
    plugin pulls exactly the sessions' objects; the tables are byte-identical to one job reading the
    whole site; a release changing one session pulls that session's changed object and reruns its
    job and the gather alone; an identical release reruns nothing after the fetch."""
    from ketamap.harmonize.scatter import in_session_folder

    sites, registry, remote, project = _released_project(
        tmp_path, fetch={"per_session": True}, jobs={"session_batch_seconds": 0}
    )
    log = _snakemake(project)
    raw = project / "resources/raw" / SITE
    manifest = json.loads((project / f"resources/raw/{SITE}.fetch.json").read_text())
    # The fetch pulled the site's own files only, and listed every file with its size.
    assert not list(raw.glob("sub-*/ses-*")), "the fetch pulled session folders"
    assert {f["path"] for f in manifest["files"]} == {
        f["path"] for f in manifest["listing"] if not in_session_folder(f["path"])
    }
    assert all(f["bytes"] > 0 for f in manifest["listing"])
    sessions = scatter.sessions(raw, "ieeg")
    assert len(sessions) == 24
    assert sorted(w["batch"] for w in _ran(log, "harmonize_ieeg_session")) == sessions
    # Every session object, pulled once; nothing else (not even the dataset's .dir listing: the
    # plugin has it from the index the fetch wrote, checked against the .dir md5 git pins).
    in_sessions = {f["md5"] for f in manifest["listing"] if in_session_folder(f["path"])}
    assert _cached_objects(project) == in_sessions
    _assert_whole_site_bytes(project, tmp_path / "whole1", fetch=True)

    # A release changing one session: that session's changed object is pulled, its job and the
    # site's gather run, nothing else is harmonized again.
    changed = sessions[7]
    before = _cached_objects(project)
    _drop_last_puff(sites, changed)
    _release(sites, registry, remote, project, "v2", session_batch_seconds=0)
    log = _snakemake(project)
    assert [w["batch"] for w in _ran(log, "harmonize_ieeg_session")] == [changed], log[-3000:]
    assert len(_ran(log, "harmonize_ieeg")) == 1
    new = _cached_objects(project) - before
    manifest = json.loads((project / f"resources/raw/{SITE}.fetch.json").read_text())
    sub, ses = scatter.session_folder(changed)
    events = {
        f["md5"] for f in manifest["listing"] if f["path"].startswith(f"{sub}/{ses}/")
    } - before
    # and nothing else: not the new release's .dir listing either (the session inputs of a site
    # fetched at another pin wait for its fetch, whose index answers for v2; no registry opened)
    assert len(events) == 1 and new == events
    _assert_whole_site_bytes(project, tmp_path / "whole2", fetch=True)

    # The same bytes released again as v3: the fetch runs, nothing after it.
    _release(sites, registry, remote, project, "v3", session_batch_seconds=0)
    log = _snakemake(project)
    assert len(_ran(log, "fetch")) == 1, log[-3000:]
    assert not _ran(log, "harmonize_ieeg_session") and not _ran(log, "harmonize_ieeg"), log[-3000:]

    # An object of the plugin's cache altered on disk never reaches a result: the session job
    # run again retrieves its session anew, the plugin drops the altered object and fetches it
    # again, and the job's piece comes out byte-identical.
    target = sessions[3]
    sub, ses = scatter.session_folder(target)
    md5 = next(f["md5"] for f in manifest["listing"] if f["path"].startswith(f"{sub}/{ses}/"))
    cached = project / "resources/dvc-storage-cache/md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    cached.write_bytes(b"altered" + cached.read_bytes()[7:])
    piece = f"resources/pieces/{SITE}/ieeg/{target}.zip"
    before = (project / piece).read_bytes()
    cmd = ["snakemake", "--profile", "workflow/profiles/default", "--cores", "2"]
    log = run([*cmd, "--force", piece], project)
    assert [w["batch"] for w in _ran(log.stdout + log.stderr, "harmonize_ieeg_session")] == [target]
    assert integrity.file_hash(cached, "md5") == md5
    assert (project / piece).read_bytes() == before

    # Planning answers the session inputs from the plugin's index the fetch wrote, not from the
    # registry (a git clone per site for a remote one): with the registry gone, a dry run of the
    # finished project plans nothing and opens nothing.
    manifest = json.loads((project / f"resources/raw/{SITE}.fetch.json").read_text())
    index = json.loads((project / f"resources/raw/{SITE}.dvc-index.json").read_text())
    assert (index["registry"], index["revision"]) == (str(registry.resolve()), "v3")
    assert index["outs"][0]["md5"] == manifest["dvc_md5"]
    assert len(index["outs"][0]["files"]) == len(manifest["listing"])
    registry.rename(registry.with_name("registry-gone"))
    dry = run(["snakemake", "--profile", "workflow/profiles/default", "-n"], project)
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]
