"""`make run EXECUTOR=slurm` against a real single-node SLURM cluster (tests/slurm_cluster.py).

The cluster has no job accounting, like many small clusters: `sacct` fails, so the launcher must
poll with `squeue`. One fresh clone of the committed project builds its own venv with `make setup`
and runs the small scenario through SLURM from a fresh shell (no venv activated); other projects
are clones of that clone that borrow its venv. Nothing here mocks SLURM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from ketamap import synth
from ketamap.demo import apply_analysis_options
from ketamap.jobresources import input_mb, scaled_mem_mb, scaled_runtime
from ketamap.registry import build_registry
from ketamap.slurm import (
    GROUP_SESSIONS,
    SESSION_GROUP,
    choose_status_command,
    group_arguments,
    min_job_age,
    node_cpus,
    profile_default_resources,
    sacct_works,
    session_rules,
    snakemake_command,
    srun_shim,
)
from slurm_cluster import Cluster, SlurmUnavailableError, start_cluster

pytestmark = pytest.mark.e2e

SCENARIO = "config/scenarios/small.yaml"
# Two iEEG sites x 6 short sessions: 12 harmonize_ieeg_session jobs of seconds each when every
# session is a job of its own (jobs.session_batch_seconds: 0).
SESSIONS_SCENARIO = "config/scenarios/ieeg_small.yaml"
PROFILE = REPO / "workflow/profiles/slurm"
# Every SLURM job of a run is named <prefix>_<run uuid>; the launcher prints the prefix.
PREFIX = re.compile(r"SLURM job names of this run start with (ketamap-[0-9a-f]+)_")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        running = start_cluster()
    except SlurmUnavailableError as why:
        pytest.skip(str(why))
    yield running
    running.stop()
    shutil.rmtree(running.root, ignore_errors=True)


def no_venv() -> dict[str, str]:
    """The environment of a new terminal: no venv activated or on PATH, no SLURM settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "KETAMAP_PSEUDONYM_KEY")
        and not k.startswith(("SLURM_", "SNAKEMAKE_"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if "/.venv/" not in p + "/"
    )
    return env


def fresh_shell(cluster: Cluster, **extra: str) -> dict[str, str]:
    """A new terminal on the cluster's submit host (SLURM_CONF set), plus ``extra``."""
    return {**no_venv(), **cluster.env, **extra}


def sh(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc.stdout + proc.stderr


class Streamed:
    """A command whose merged output is read line by line, each line stamped with the wall clock."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.started = time.time()
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal gives a command
        )
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, pattern: str) -> tuple[float, re.Match[str]] | None:
        for stamp, line in list(self.lines):
            found = re.search(pattern, line)
            if found:
                return stamp, found
        return None

    def wait_for(self, pattern: str, seconds: float) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            hit = self.first(pattern)
            if hit:
                return hit[1]
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(
            f"no line matching {pattern!r} within {seconds} s:\n{self.text[-4000:]}"
        )

    def finish(self, seconds: float) -> int:
        """Wait for the process and for every writer of its output to exit (EOF)."""
        try:
            self.proc.wait(timeout=seconds)
        finally:
            self.reader.join(timeout=max(1.0, seconds - (time.time() - self.started)))
            if not self.reader.is_alive() and self.proc.stdout is not None:
                self.proc.stdout.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL whatever is left of the command's process group (cleanup after a failure)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def borrow_venv(project: Path, donor: Path) -> None:
    """Link the donor clone's venv; the lock files keep older mtimes so make sees it installed."""
    (project / ".venv").symlink_to(donor / ".venv", target_is_directory=True)
    installed = (donor / ".venv/.ketamap-installed").stat().st_mtime
    for name in (
        "requirements.lock",
        "requirements-uv.lock",
        "pyproject.toml",
        "packages/snakemake-storage-plugin-dvc/pyproject.toml",
    ):
        os.utime(project / name, (installed - 60, installed - 60))


def clone_of(source: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    return dest


def result_hashes(project: Path) -> dict[str, str]:
    """sha256 of every output under results/, the manifest included (the demo registry's commits
    and the clones' code commit are the same, so its bytes are too)."""
    return {
        str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((project / "results").rglob("*"))
        if path.is_file()
    }


def run_jobs(cluster: Cluster, prefix: str) -> list[tuple[str, str, str]]:
    return [job for job in cluster.queue() if job[1].startswith(f"{prefix}_")]


def processes_in(project: Path) -> list[int]:
    """Processes whose working directory is the project (Snakemake, its jobs, the launcher)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        if cwd == project or project in cwd.parents:
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the committed project with its own venv, built by `make setup`."""
    base = tmp_path_factory.mktemp("slurm")
    lab = clone_of(REPO, base / "lab")
    sh(["make", "setup"], lab, no_venv())
    return lab


@pytest.fixture(scope="module")
def slurm_run(cluster: Cluster, lab: Path) -> dict:
    """The small scenario through the README's command, from a fresh shell, timed."""
    env = fresh_shell(cluster, SLURM_PARTITION="main")
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "run", "EXECUTOR=slurm", f"SCENARIO={SCENARIO}"],
        cwd=lab,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return {"output": output, "seconds": seconds, "hashes": result_hashes(lab)}


@pytest.fixture(scope="module")
def local_run(lab: Path, slurm_run: dict) -> dict:
    """The same scenario with `make run` (local executor) in a second clone, timed."""
    local = clone_of(lab, lab.parent / "local")
    borrow_venv(local, lab)
    started = time.monotonic()
    sh(["make", "run", f"SCENARIO={SCENARIO}"], local, no_venv())
    return {"project": local, "seconds": time.monotonic() - started, "hashes": result_hashes(local)}


FORKSERVER_LOG = ".snakemake/log/ketamap-forkserver.log"


def forked_steps(project: Path) -> int:
    """How many job logs of ``project`` say their step ran in the fork server."""
    return sum(
        "in the fork server" in log.read_text(errors="replace")
        for log in (project / "logs").rglob("*.log")
    )


def test_small_scenario_through_slurm_matches_the_local_run(
    cluster: Cluster, lab: Path, slurm_run: dict, local_run: dict
) -> None:
    out = slurm_run["output"]
    assert "job states from squeue (sacct does not answer" in out
    prefix = PREFIX.search(out)
    assert prefix, out[-3000:]
    found = re.findall(
        r"has been submitted with SLURM jobid (\d+) \(log: \S+/slurm_logs/(\w+)/", out
    )
    submitted = [job_id for job_id, _ in found]
    # Every job but the `all` target: 24 jobs alone, and the PET session jobs (the small
    # scenario's short scans packed into one per site) alone or in groups of the launcher's
    # SLURM_GROUP_SESSIONS, never spanning sites; each session job run exactly once.
    groups = [job_id for job_id, kind in found if kind.startswith(f"group_{SESSION_GROUP}")]
    alone = [kind for _, kind in found if kind == "rule_harmonize_pet_session"]
    batches = list((lab / "resources/pieces").glob("*/pet/*.zip"))
    assert len(batches) == 3, batches  # one per PET site
    assert len(submitted) == 24 + len(groups) + len(alone), out[-3000:]
    finished = re.findall(r"Finished jobid: \d+ \(Rule: harmonize_pet_session\)", out)
    assert len(finished) == len(batches) >= len(groups) + len(alone), out[-3000:]
    assert "slurm_partition=main" in out  # SLURM_PARTITION reached every job's resources
    # slurmctld ran them under the run's name, and every one of them completed.
    jobs = {job_id: state for job_id, _, state in run_jobs(cluster, prefix.group(1))}
    assert set(submitted) <= set(jobs), (submitted, jobs)
    assert {jobs[j] for j in submitted} == {"COMPLETED"}, jobs
    log = cluster.log()
    for job_id in submitted:
        assert re.search(rf"JobId={job_id} .*(?:WEXITSTATUS 0|done)", log), job_id
    # Byte-identical to the local executor's outputs, whose steps ran in its fork server
    # (jobs.forkserver; the last ones at least: its first jobs start before it listens). A
    # cluster job never reaches it: the SLURM run starts none.
    assert forked_steps(local_run["project"]) > 0
    assert forked_steps(lab) == 0 and not (lab / FORKSERVER_LOG).exists()
    got, want = slurm_run["hashes"], local_run["hashes"]
    assert got.keys() == want.keys()
    assert [p for p in want if got[p] != want[p]] == []
    assert any(p.startswith("results/pooled/") for p in want)
    print(
        f"\nsmall scenario: make run EXECUTOR=slurm {slurm_run['seconds']:.0f} s, "
        f"make run (local) {local_run['seconds']:.0f} s"
    )


def test_short_session_jobs_are_submitted_in_groups(cluster: Cluster, lab: Path) -> None:
    """ieeg_small through `make run EXECUTOR=slurm` (fresh shell, default SLURM_GROUP_SESSIONS)
    with one job per session (``jobs.session_batch_seconds: 0`` in config.yaml), each pulling its
    session through the DVC storage plugin (``fetch.per_session: true``): its 12
    one-second session jobs go to SLURM in groups of at most 8, each group asking for no more
    CPUs than the node has; every session job runs exactly once; every other job is submitted
    alone; the outputs are byte-identical to `make run` (local, the default batches: one session
    job per site) in another clone, the manifest apart from its code commit."""
    project = clone_of(lab, lab.parent / "sessions-slurm")
    borrow_venv(project, lab)
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    config["jobs"] = {"session_batch_seconds": 0}
    config["fetch"] = {"per_session": True}  # each session job's sessions: the DVC storage plugin
    (project / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = fresh_shell(cluster, SLURM_PARTITION="main")
    started = time.monotonic()
    out = sh(["make", "run", "EXECUTOR=slurm", f"SCENARIO={SESSIONS_SCENARIO}"], project, env, 1500)
    slurm_seconds = time.monotonic() - started
    prefix = PREFIX.search(out)
    assert prefix, out[-3000:]
    rules = session_rules()
    assert "harmonize_ieeg_session" in rules
    assert f"session jobs ({', '.join(rules)}) submitted 8 to a SLURM job" in out
    assert f"--cores {cluster.cpus} --groups {' '.join(f'{r}=sessions' for r in rules)}" in out
    sessions = sorted((project / "resources/pieces").glob("*/ieeg/*.zip"))
    assert len(sessions) == 12, sessions
    # The fetches pulled the sites' own files; the sessions came through the plugin's cache.
    assert not list((project / "resources/raw").glob("*/sub-*/ses-*")), out[-3000:]
    assert len(list((project / "resources/dvc-storage-cache/md5").glob("*/*"))) >= 12
    # Each session job ran once: a group re-formed while its jobs were running would run some again.
    finished = re.findall(r"Finished jobid: \d+ \(Rule: harmonize_ieeg_session\)", out)
    assert len(finished) == len(sessions), out[-4000:]
    submitted = re.findall(
        r"has been submitted with SLURM jobid (\d+) \(log: \S+/slurm_logs/(\w+)/", out
    )
    kinds = [kind for _, kind in submitted]
    groups = [job_id for job_id, kind in submitted if kind.startswith(f"group_{SESSION_GROUP}")]
    assert "rule_harmonize_ieeg_session" not in kinds, kinds
    assert 2 <= len(groups) <= 3, kinds  # 12 sessions, at most 8 a group, formed once
    # Every other job alone: demo 2, fetch 2, clinical 2, gathers 2, tables 5 + timecourses 1,
    # pooled 3, timecourse figure 1, manifest 1.
    assert len(submitted) == len(groups) + 19, kinds
    # A group asks for the node's CPUs at most (its jobs run in layers), and completed.
    jobs = {job_id: state for job_id, _, state in run_jobs(cluster, prefix.group(1))}
    assert {jobs[job_id] for job_id, _ in submitted} == {"COMPLETED"}, jobs
    for job_id in groups:
        cpus = cluster.run("squeue", "--noheader", "--states=all", "-j", job_id, "-o", "%C")
        assert 1 <= int(cpus.stdout.strip()) <= cluster.cpus, cpus.stdout + cpus.stderr
    # Byte-identical to the local executor.
    local = clone_of(lab, lab.parent / "sessions-local")
    borrow_venv(local, lab)
    started = time.monotonic()
    sh(["make", "run", f"SCENARIO={SESSIONS_SCENARIO}"], local, no_venv())
    local_seconds = time.monotonic() - started
    got, want = result_hashes(project), result_hashes(local)
    assert got.keys() == want.keys()
    assert [p for p in want if got[p] != want[p]] == ["results/manifest.json"]
    assert any(p.startswith("results/tables/ieeg_") for p in want)
    # The manifests differ in the code commit only: this clone's config edit makes it "+dirty"
    # (`jobs` and `fetch` are left out of the config hash: they never change a result, and a
    # per-session fetch records the whole dataset's files, as a whole-site fetch does).
    manifests = [json.loads((p / "results/manifest.json").read_text()) for p in (project, local)]
    assert manifests[0].pop("code_commit") == manifests[1].pop("code_commit") + "+dirty"
    assert manifests[0] == manifests[1]
    print(
        f"\nieeg_small: {len(sessions)} session jobs in {len(groups)} SLURM jobs, "
        f"{len(submitted)} submissions; make run EXECUTOR=slurm {slurm_seconds:.0f} s, "
        f"make run (local) {local_seconds:.0f} s"
    )


def test_dry_run_resources_grow_with_the_input(lab: Path, slurm_run: dict) -> None:
    """Snakemake evaluates each job's mem_mb and runtime from its real input: a PET session whose
    image is 800 MB gets more memory and time than another site's session (a session job's
    resources follow its own sessions' files as the fetch manifest lists them: with per-session
    fetches, the default, the dataset's ``listing``, each file's size on the DVC remote).

    The listed size is edited in the manifest only: the session is still the one the plugin's
    index lists, and the fetched tree is untouched, so nothing is planned to be fetched again."""
    from ketamap.harmonize import scatter

    fetched = lab / "resources/raw/ycu_obs.fetch.json"
    recorded = fetched.read_text()
    manifest = json.loads(recorded)
    assert "listing" in manifest  # the lab's fetches are per session (the default)
    big_session = scatter.sessions(lab / "resources/raw/ycu_obs", "pet")[0]
    sub, ses = scatter.session_folder(big_session)
    image = next(
        f
        for f in manifest["listing"]
        if f["path"].startswith(f"{sub}/{ses}/pet/") and f["path"].endswith(".nii.gz")
    )
    image["bytes"] = 800 * 2**20
    fetched.write_text(json.dumps(manifest))
    other = scatter.sessions(lab / "resources/raw/keio_hc", "pet")[0]
    try:
        out = sh(
            [
                ".venv/bin/snakemake",
                "--profile",
                "workflow/profiles/slurm",
                "--dry-run",
                f"resources/pieces/ycu_obs/pet/{big_session}.zip",
                f"resources/pieces/keio_hc/pet/{other}.zip",
                "--config",
                f"scenario={SCENARIO}",
                "--forcerun",  # last: it takes every word after it
                "harmonize_pet_session",
            ],
            lab,
            no_venv(),
        )
    finally:
        fetched.write_text(recorded)
    assert "fetch:" not in out, out[-3000:]  # consistent fetched data: nothing to fetch again
    planned = {}
    for job in re.finditer(r"^rule harmonize_pet_session:\n((?:    .*\n?)*)", out, re.M):
        where = re.search(r"wildcards: site=(\w+), batch=([\w-]+)", job.group(1))
        res = re.search(r"resources: .*?mem_mb=(\d+).*?runtime=(\d+)", job.group(1))
        assert where and res, job.group(0)
        planned[where.groups()] = (int(res.group(1)), int(res.group(2)))
    big, small = ("ycu_obs", big_session), ("keio_hc", other)
    assert set(planned) == {big, small}, out[-3000:]
    assert planned[big][0] >= 1000 + 2 * 800 > planned[small][0]
    assert planned[big][1] > planned[small][1] >= 10


def _drop_column(path: Path, column: str) -> None:
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    idx = lines[0].index(column)
    path.write_text(
        "\n".join("\t".join(c for i, c in enumerate(row) if i != idx) for row in lines) + "\n"
    )


def test_bad_site_fails_as_a_slurm_job_and_the_others_finish(cluster: Cluster, lab: Path) -> None:
    """keio_hc's participants.tsv lacks `sex`: its clinical and PET jobs fail on the cluster, the failure is
    reported soon after the job ended with the job's log path, the other sites finish, and the
    command exits non-zero. SLURM_STATUS=squeue is forced here (the first run chose it itself)."""
    base = lab.parent / "bad"
    project = clone_of(lab, base / "project")
    borrow_venv(project, lab)
    sites = base / "sites"
    synth.generate(project / SCENARIO, sites)
    _drop_column(sites / "keio_hc" / "participants.tsv", "sex")
    registry = base / "registry"
    build_registry(sites, registry, str(base / "remote"), "v1")
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    scen = synth.load_scenario(project / SCENARIO)
    config["sites"] = synth.site_configs(scen, str(registry), "v1")
    apply_analysis_options(config, synth.analysis_options(scen))
    del config["demo"]
    config["atlas"]["registry"] = str(registry)
    (project / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    run = Streamed(
        ["make", "run", "EXECUTOR=slurm"],
        project,
        fresh_shell(cluster, SLURM_PARTITION="main", SLURM_STATUS="squeue"),
    )
    try:
        assert run.finish(900) != 0, run.text[-4000:]
    finally:
        run.kill()
    out = run.text
    assert re.search(r"^ketamap slurm: job states from squeue$", out, re.M), out[:2000]
    failed = run.first(r"SLURM-job '(\d+)' failed, SLURM status is: 'FAILED'")
    assert failed, out[-5000:]
    reported_at, match = failed
    job_id = match.group(1)
    # The failed job harmonized keio_hc (clinical and PET both read participants.tsv, so either
    # may fail first), and its SLURM log path is printed.
    slurm_log = re.search(
        rf"(\S+/\.snakemake/slurm_logs/(?:rule_harmonize_(?:clinical|pet|pet_session)/keio_hc\S*"
        rf"|group_{SESSION_GROUP}\S*)/{job_id}\.log)",
        out,
    )
    assert slurm_log and Path(slurm_log.group(1)).is_file(), out[-5000:]
    assert "site 'keio_hc', file 'participants.tsv', field 'sex': missing required column" in out
    # Reported within a bound after SLURM saw the job end (squeue keeps it for MinJobAge).
    ended = cluster.run("squeue", "--noheader", "--states=all", "-j", job_id, "-o", "%T|%e")
    state, _, end = ended.stdout.strip().partition("|")
    assert state == "FAILED", ended.stdout + ended.stderr
    lag = reported_at - datetime.fromisoformat(end).timestamp()
    assert -2 <= lag <= 60, lag
    # The other sites went on.
    for site in ("ycu_rct", "ycu_obs"):
        assert (project / f"results/sites/{site}/subjects.parquet").is_file(), site
        assert (project / f"results/sites/{site}/pet_regional.parquet").is_file(), site
    assert not (project / "results/sites/keio_hc/subjects.parquet").exists()
    assert not (project / "results/tables/subjects.parquet").exists()
    prefix = PREFIX.search(out)
    assert prefix
    jobs = run_jobs(cluster, prefix.group(1))
    assert not [j for j in jobs if j[2] in ("PENDING", "RUNNING", "COMPLETING")], jobs


@pytest.mark.parametrize("target", ["process group", "make"])
def test_sigterm_cancels_the_runs_jobs_and_leaves_no_lock(
    cluster: Cluster, lab: Path, target: str
) -> None:
    """SIGTERM to the process group of `make run EXECUTOR=slurm` (a terminal's kill, a batch
    system) or to make alone (`kill <pid>`: make passes it on to its recipe) while a job runs."""
    project = clone_of(lab, lab.parent / f"interrupted-{target.replace(' ', '-')}")
    borrow_venv(project, lab)
    run = Streamed(
        ["make", "run", "EXECUTOR=slurm", f"SCENARIO={SCENARIO}"],
        project,
        fresh_shell(cluster, SLURM_PARTITION="main"),
    )
    try:
        prefix = run.wait_for(PREFIX.pattern, 60).group(1)
        deadline = time.monotonic() + 120
        while not any(state == "RUNNING" for _, _, state in run_jobs(cluster, prefix)):
            assert time.monotonic() < deadline, (run.text[-3000:], cluster.queue())
            time.sleep(0.5)
        assert list((project / ".snakemake/locks").glob("*"))  # the run holds its lock
        if target == "make":
            os.kill(run.proc.pid, signal.SIGTERM)
        else:
            os.killpg(run.proc.pid, signal.SIGTERM)
        sent = time.monotonic()
        run.finish(90)
        assert time.monotonic() - sent < 90
    finally:
        run.kill()
    # Nothing of the run is left: no process, no queued or running job, no lock.
    deadline = time.monotonic() + 30
    while processes_in(project) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_in(project) == [], run.text[-3000:]
    jobs = run_jobs(cluster, prefix)
    assert jobs and not [j for j in jobs if j[2] in ("PENDING", "RUNNING", "COMPLETING")], jobs
    assert any(state == "CANCELLED" for _, _, state in jobs), jobs
    assert "cancelling the SLURM jobs of this run" in run.text
    assert list((project / ".snakemake/locks").glob("*")) == []
    out = sh(["make", "dry-run", f"SCENARIO={SCENARIO}"], project, no_venv())
    assert "Job stats:" in out and "LockException" not in out


def test_auto_status_command_picks_squeue_without_accounting(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    assert "accounting storage is disabled" in cluster.run("sacct").stderr.lower()
    assert sacct_works() is False
    assert choose_status_command("auto") == "squeue"
    assert choose_status_command("auto", probe=lambda: True) == "sacct"
    assert choose_status_command("squeue", probe=lambda: True) == "squeue"
    assert choose_status_command("sacct") == "sacct"
    with pytest.raises(ValueError, match="expected one of auto, sacct, squeue"):
        choose_status_command("scontrol")
    assert min_job_age() == 3600


def test_srun_shim_restores_slurm_conf(cluster: Cluster, tmp_path: Path) -> None:
    """The executor's job step strips SLURM_CONF before its srun; the shim puts it back."""
    env = fresh_shell(cluster)
    shim = srun_shim(env["SLURM_CONF"], tmp_path / "bin")
    assert shim is not None
    del env["SLURM_CONF"]
    bare = subprocess.run(
        ["srun", "-n1", "true"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert bare.returncode != 0 and "configuration" in bare.stderr
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    shimmed = subprocess.run(
        ["srun", "-n1", "--mem=50", "hostname"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shimmed.returncode == 0 and shimmed.stdout.strip() == cluster.host, shimmed.stderr


def test_snakemake_command_keeps_the_profiles_default_resources() -> None:
    cmd = snakemake_command(
        python="py",
        profile=PROFILE,
        status_command="squeue",
        prefix="ketamap-0",
        account="lab1",
        partition="main",
        extra=["--config", "scenario=x"],
    )
    profile = profile_default_resources(PROFILE)
    assert profile == ["mem_mb=2000", "runtime=30"]
    at = cmd.index("--default-resources")
    assert cmd[at + 1 :] == [
        *profile,
        "slurm_account=lab1",
        "slurm_partition=main",
        "--config",
        "scenario=x",
    ]
    assert cmd[:3] == ["py", "-m", "snakemake"]
    assert "--slurm-no-account" not in cmd
    assert cmd[cmd.index("--slurm-status-command") + 1] == "squeue"
    assert cmd[cmd.index("--slurm-jobname-prefix") + 1] == "ketamap-0"
    bare = snakemake_command(
        python="py",
        profile=PROFILE,
        status_command="squeue",
        prefix="p",
        account=None,
        partition=None,
        extra=[],
    )
    assert "--default-resources" not in bare  # the profile's own apply
    assert "--slurm-no-account" in bare  # no accounting: nothing to guess the account from
    with_sacct = snakemake_command(
        python="py",
        profile=PROFILE,
        status_command="sacct",
        prefix="p",
        account=None,
        partition="main",
        extra=[],
    )
    assert "--slurm-no-account" not in with_sacct
    assert with_sacct[with_sacct.index("--default-resources") + 1 :] == [
        *profile,
        "slurm_partition=main",
    ]


def test_makefile_passes_the_slurm_settings(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            "make",
            "-n",
            "-o",
            ".venv/.ketamap-installed",
            "run",
            "EXECUTOR=slurm",
            "SLURM_STATUS=squeue",
            "SLURM_ACCOUNT=lab1",
            "SLURM_PARTITION=main",
            "SLURM_GROUP_SESSIONS=4",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(
        r"\.venv/bin/python -m ketamap\.slurm --status-command squeue +--account 'lab1' "
        r"--partition 'main' +--group-sessions '4' +--",
        out,
    ), out


class _Input(list):
    """A Snakemake job's input as the resource callables see it: paths, with named entries."""

    def __init__(self, paths: list[str], **named: object) -> None:
        super().__init__(paths)
        self.named = named

    def get(self, key: str, default: object = None) -> object:
        return self.named.get(key, default)


def test_resource_helpers_grow_with_input_size(tmp_path: Path) -> None:
    small, big, code = tmp_path / "small", tmp_path / "big", tmp_path / "code.py"
    (small / "sub").mkdir(parents=True)
    (small / "sub" / "a.tsv").write_bytes(b"x" * 2**20)
    (small / "sub" / "img.nii.gz").write_bytes(b"x" * 2**20)
    (big / "sub").mkdir(parents=True)
    (big / "sub" / "a.tsv").write_bytes(b"x" * 2**20)
    with (big / "sub" / "img.nii.gz").open("wb") as handle:
        handle.truncate(3 * 2**30)  # sparse 3 GB
    code.write_bytes(b"x" * 5 * 2**20)
    few = _Input([str(small), str(code)], code=[str(code)])
    many = _Input([str(big), str(code)], code=[str(code)])
    assert input_mb(few) == pytest.approx(2)  # the directory walked, the code left out
    assert input_mb(few, largest=True) == pytest.approx(1)
    assert input_mb(many, files=["*.tsv"]) == pytest.approx(1)
    assert input_mb(_Input([str(tmp_path / "not-made-yet")])) == 0
    mem = scaled_mem_mb(1000, per_mb=20)
    assert mem(None, few) == 1040 and mem(None, many) == 1000 + 20 * (3 * 1024 + 1)
    largest = scaled_mem_mb(1000, per_largest_mb=2, files=["*.nii.gz"])
    assert largest(None, few) == 1002 and largest(None, many) == 1000 + 2 * 3 * 1024
    runtime = scaled_runtime(30, per_gb=10)
    assert runtime(None, few) == 31 and runtime(None, many) == 61
    assert scaled_runtime(30, per_gb=10, files=["*.tsv"])(None, many) == 31


def test_session_rules_are_grouped(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every per-session rule of HARMONIZERS is grouped; --cores is the node's CPUs (sinfo)."""
    from ketamap.harmonize import HARMONIZERS

    rules = session_rules()
    assert rules == [f"harmonize_{m}_session" for m, h in HARMONIZERS.items() if h.sessions]
    assert "harmonize_ieeg_session" in rules
    assert group_arguments(8, ["harmonize_ieeg_session", "harmonize_pet_session"]) == [
        "--groups",
        "harmonize_ieeg_session=sessions",
        "harmonize_pet_session=sessions",
        "--group-components",
        "sessions=8",
    ]
    assert group_arguments(1) == [] and group_arguments(8, []) == []
    assert GROUP_SESSIONS == 8
    cmd = snakemake_command(
        python="py",
        profile=PROFILE,
        status_command="squeue",
        prefix="p",
        account=None,
        partition="main",
        extra=["--config", "scenario=x"],
        group_sessions=8,
        cores=2,
        session_rules=rules,
    )
    assert cmd[:3] == ["py", "-m", "ketamap.snakemake_groups"]  # Snakemake with stable groups
    at = cmd.index("--cores")
    assert cmd[at : at + 3 + len(rules)] == ["--cores", "2", *group_arguments(8, rules)[:-2]]
    assert cmd[cmd.index("--group-components") + 1] == "sessions=8"
    assert cmd[-2:] == ["--config", "scenario=x"]
    # The profile's fallback when sinfo gives no CPUs: one CPU, every group's jobs one at a time.
    assert yaml.safe_load((PROFILE / "config.yaml").read_text())["cores"] == 1
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    assert node_cpus("main") == cluster.cpus
    assert node_cpus() == cluster.cpus
    assert node_cpus("no-such-partition") is None


def test_stable_groups_chunk_neighbouring_components(tmp_path: Path) -> None:
    """python -m ketamap.snakemake_groups: components chunked N at a time in wildcard order, never
    across sites (a group fails as a whole: one bad site must not fail another's sessions)."""
    (tmp_path / "Snakefile").write_text(
        'rule all:\n    input: expand("out/a/{i}.txt", i=range(1, 6)), '
        'expand("out/b/{i}.txt", i=range(6, 9))\n\n'
        'rule piece:\n    output: "out/{site}/{i}.txt"\n    shell: "echo {wildcards.i} > {output}"\n'
    )
    out = sh(
        [
            sys.executable,
            "-m",
            "ketamap.snakemake_groups",
            "--dry-run",
            "--cores",
            "2",
            "--groups",
            "piece=g",
            "--group-components",
            "g=2",
        ],
        tmp_path,
        dict(os.environ),
        120,
    )
    groups = [
        sorted(re.findall(r"wildcards: site=\w, i=(\d)", block))
        for block in out.split("Group job g")[1:]
    ]
    # site a: 1-5 in twos; site b: 6-8; a's 5 is never joined with b's 6
    assert sorted(groups) == [["1", "2"], ["3", "4"], ["5"], ["6", "7"], ["8"]], out[-3000:]
