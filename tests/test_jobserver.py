"""The fork server of local runs (ketamap.jobserver): a real server process, real job processes.

The steps live in a module only the server can import (its PYTHONPATH), so a job process that
succeeds has run its step in the server's child, never by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

STEPS = """
import os, sys, time
from pathlib import Path
from ketamap.errors import SiteDataError

def echo(text, path):
    print("out:" + text, flush=True)
    print("err:" + text, file=sys.stderr, flush=True)
    Path(path).write_text(f"{os.getcwd()}|{os.environ.get('MARK')}|{os.getpid()}|{type(text).__name__}")

def fails():
    raise SiteDataError("missing required column", site="s", file="participants.tsv", field="sex")

def nap(marker):
    Path(marker).write_text(str(os.getpid()))
    time.sleep(120)
"""

# A module whose import lasts until the test releases it (a slow import, SciPy's or statsmodels').
SLOW_IMPORT = """
import os, time
from pathlib import Path
while not Path(os.environ["RELEASE"]).exists():
    time.sleep(0.05)
"""

# What a rule's run: block does (in Snakemake's process, one thread per job).
CLIENT = """
import sys
from ketamap.adapter import StepError, run_job
step, log, *pairs = sys.argv[1:]
try:
    run_job(step, [log], {}, **dict(p.split("=", 1) for p in pairs))
except StepError as exc:
    sys.exit(f"job failed: {exc}")
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KETAMAP_FORKSERVER")}
    return env | extra


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited
    stat = Path(f"/proc/{pid}/stat")
    return not stat.is_file() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _wait(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _start_server(tmp_path: Path, preload: tuple[str, ...], **env: str) -> dict:
    steps = tmp_path / "steps"
    steps.mkdir(exist_ok=True)
    (steps / "jobsteps.py").write_text(STEPS)
    (steps / "slowimport.py").write_text(SLOW_IMPORT)
    address = f"ketamap-test-{os.getpid()}-{tmp_path.name}"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import os, sys; from ketamap import jobserver; "
                "jobserver.serve(sys.argv[1], os.getppid(), preload=tuple(sys.argv[2:]))",
                address,
                *preload,
            ],
            env=_env(PYTHONPATH=str(steps), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    assert _wait(lambda: "listening" in log.read_text()), log.read_text()
    return {"address": address, "proc": proc, "log": log, "steps": steps}


def _processes_with(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (a server's address: every link of its
    chain, which are forks of one another)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes() and _alive(int(proc.name)):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    started = _start_server(tmp_path, ("jobsteps", "pandas"))
    yield started
    started["proc"].terminate()
    started["proc"].wait(timeout=10)


def _client(server: dict, tmp_path: Path, step: str, *pairs: str, **env: str):
    return subprocess.run(
        [sys.executable, "-c", CLIENT, step, str(tmp_path / "job.log"), *pairs],
        cwd=tmp_path,
        env=_env(KETAMAP_FORKSERVER=server["address"], **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_job_runs_its_step_in_the_servers_child_with_its_streams_folder_and_env(
    server: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    done = _client(server, tmp_path, "jobsteps:echo", "text=hi", f"path={out}", MARK="m1")
    assert done.returncode == 0, done.stderr
    # the job's own stdout/stderr (the fds it handed over), its folder and environment
    assert "out:hi" in done.stdout and "err:hi" in done.stderr
    cwd, mark, pid, kind = out.read_text().split("|")
    assert (cwd, mark, kind) == (str(tmp_path), "m1", "str")
    assert int(pid) != server["proc"].pid
    line = (tmp_path / "job.log").read_text().strip().splitlines()[-1]
    assert line.startswith("INFO ketamap: step jobsteps.echo compute ")
    assert line.endswith(", in the fork server"), line


def test_a_failing_step_exits_1_with_one_message_and_no_traceback(
    server: dict, tmp_path: Path
) -> None:
    done = _client(server, tmp_path, "jobsteps:fails")
    assert done.returncode == 1
    message = "site 's', file 'participants.tsv', field 'sex': missing required column"
    assert message in done.stderr and "Traceback" not in done.stderr
    assert message in (tmp_path / "job.log").read_text()
    # the server goes on serving
    assert (
        _client(server, tmp_path, "jobsteps:echo", "text=x", f"path={tmp_path / 'o'}").returncode
        == 0
    )


def test_a_job_that_cannot_reach_a_server_runs_its_step_in_a_process_of_its_own(
    server: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CLIENT,
            "jobsteps:echo",
            str(tmp_path / "job.log"),
            "text=a",
            f"path={out}",
        ],
        cwd=tmp_path,
        env=_env(KETAMAP_FORKSERVER="ketamap-nobody-listens", PYTHONPATH=str(server["steps"])),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "out:a" in done.stdout and "err:a" in done.stderr
    assert not (tmp_path / "job.log").read_text().strip().endswith("in the fork server")
    # its own process: not the job's (Snakemake's, in a workflow), which imports no step
    assert int(out.read_text().split("|")[2]) not in (os.getpid(), server["proc"].pid)


def test_a_stopped_job_stops_its_step_process_without_a_server(tmp_path: Path) -> None:
    """No server (a cluster node, jobs.forkserver false): the step's own process ends with the
    job that started it (its stdin, which the job holds open, closes)."""
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "jobsteps.py").write_text(STEPS)
    job, step = _napping_job(tmp_path, PYTHONPATH=str(steps))
    assert step != job.pid and _alive(step)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert _wait(lambda: not _alive(step), 10), f"the step's process {step} outlived its job"


def _napping_job(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    """A job whose step sleeps, and the pid of the process running the step."""
    marker = tmp_path / "step.pid"
    job = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLIENT,
            "jobsteps:nap",
            str(tmp_path / "job.log"),
            f"marker={marker}",
        ],
        cwd=tmp_path,
        env=_env(**env),
    )
    assert _wait(lambda: marker.is_file() and marker.read_text().strip() != "")
    return job, int(marker.read_text())


def test_a_stopped_job_stops_its_child(server: dict, tmp_path: Path) -> None:
    job, child = _napping_job(tmp_path, KETAMAP_FORKSERVER=server["address"])
    assert _alive(child)
    job.send_signal(signal.SIGKILL)  # as Snakemake cancelling a job, or worse
    job.wait()
    assert _wait(lambda: not _alive(child), 10), f"the step's process {child} outlived its job"
    assert server["proc"].poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another user to connect as")
def test_the_server_runs_nothing_for_another_user(server: dict, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    # the job process drops to user nobody after its imports, then asks the server, which
    # hangs up: the job hears there is no server (it would run its step itself) or, when its
    # request was already on its way, that no status came back (a failed job)
    as_nobody = (
        "import os, sys; from ketamap import jobserver; os.setuid(65534); "
        "status = jobserver.submit({'step': 'jobsteps:echo', 'kwargs': {'text': 'x', "
        "'path': sys.argv[1]}, 'log_file': None, 'limits': None}, startup=0.0); "
        "sys.exit(3 if status is None else status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", as_nobody, str(out)],
        cwd="/",
        env=_env(KETAMAP_FORKSERVER=server["address"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (1, 3), done.stderr
    time.sleep(0.5)
    assert not out.exists()


def test_the_server_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from ketamap import jobserver; "
            "print(jobserver.start(sys.argv[1]), flush=True); time.sleep(300)",
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert starter.stdout is not None
    address = starter.stdout.readline().strip()

    assert _wait(lambda: "listening" in log.read_text() if log.is_file() else False, 60)
    assert _processes_with(address)
    starter.kill()  # no atexit, no onerror: the parent's death alone
    starter.wait()
    starter.stdout.close()
    assert _wait(lambda: not _processes_with(address), 10), _processes_with(address)
    # the chain stopped from its first link down: the serving one alone said how far it got
    assert log.read_text().count("forkserver: stopped;") == 1, log.read_text()


def test_a_job_never_waits_for_the_servers_imports(tmp_path: Path) -> None:
    """A job that comes while the server imports (here an import that lasts until the test
    releases it) is forked at once from what the server has; later jobs find everything imported.
    Stopping the server stops the whole chain of its links, and one of them reports."""
    release = tmp_path / "release"
    server = _start_server(tmp_path, ("slowimport", "jobsteps"), RELEASE=str(release))
    try:
        early = _client(server, tmp_path, "jobsteps:echo", "text=a", f"path={tmp_path / 'a'}")
        assert early.returncode == 0, early.stderr
        line = (tmp_path / "job.log").read_text().strip().splitlines()[-1]
        assert line.endswith(", preloaded 0/2, in the fork server"), line
        assert "modules imported in" not in server["log"].read_text()
        release.touch()
        assert _wait(lambda: "modules imported in" in server["log"].read_text())
        late = _client(server, tmp_path, "jobsteps:echo", "text=b", f"path={tmp_path / 'b'}")
        assert late.returncode == 0, late.stderr
        line = (tmp_path / "job.log").read_text().strip().splitlines()[-1]
        assert line.endswith("s, in the fork server"), line
        assert len(_processes_with(server["address"])) >= 2  # a link per import, at least
    finally:
        server["proc"].terminate()
        server["proc"].wait(timeout=10)
    assert _wait(lambda: not _processes_with(server["address"]), 10)
    text = server["log"].read_text()
    assert text.count("forkserver: stopped;") == 1, text
    assert "forkserver: stopped; 2 of 2 preloaded" in text, text
