"""Run the workflow on a SLURM cluster: what ``make run EXECUTOR=slurm`` calls.

``python -m ketamap.slurm [options] -- [snakemake arguments]`` runs
``snakemake --profile workflow/profiles/slurm`` with this interpreter and adds what a profile
cannot decide or do:

- **the status command.** The SLURM executor plugin polls ``sacct`` whenever the binary exists,
  and on a cluster without accounting ``sacct`` fails on every poll, so no job ever finishes or
  fails and the run hangs. ``auto`` (the default) asks ``sacct`` the plugin's own question once
  and uses it only when it answers, else ``squeue``;
- **account and partition** (``--account``/``--partition``, defaulting to ``SLURM_ACCOUNT`` /
  ``SLURM_PARTITION``), passed as the default resources ``slurm_account`` / ``slurm_partition``
  next to the profile's own default resources (a ``--default-resources`` on the command line
  replaces the profile's);
- **a job-name prefix unique to this run** (``ketamap-<8 hex>``): every SLURM job of the run is
  named ``<prefix>_<snakemake run uuid>``, so the run's jobs can be found in ``squeue``;
- **a cluster configured through ``SLURM_CONF``** (a slurm.conf outside ``/etc/slurm``): the
  executor's job step drops every ``SLURM_*`` variable before it starts the job's ``srun``, so that
  ``srun`` finds no configuration and every job fails ("Could not establish a configuration
  source"). When ``SLURM_CONF`` is set, the launcher writes ``.snakemake/ketamap-slurm/bin/srun``,
  which sets it again and runs the real ``srun``, and puts it first on the jobs' ``PATH``;
- **short session jobs submitted in batches.** Every ``harmonize_<modality>_session`` rule (the
  modalities of :data:`ketamap.harmonize.HARMONIZERS` harmonized per session) is put in the
  Snakemake group ``sessions`` (``--groups``), and ``--group-components sessions=N`` makes one
  SLURM job of up to N session jobs (``--group-sessions``, default ``SLURM_GROUP_SESSIONS`` or
  8; 1 submits each session job alone). A session job computes for seconds when each session is
  a job (``jobs.session_batch_seconds: 0``), while each SLURM job costs a submission, a queue wait
  and two Snakemake start-ups;
- **the CPUs of one node** (``--cores``): the fewest CPUs of a node of the partition, from
  ``sinfo``. With a cluster executor ``--cores`` does not limit how many jobs run at once; it is the
  width a group job must fit in (Snakemake runs the group's jobs in layers of at most that many
  CPUs, so the group asks for that many CPUs and the sum of its layers' runtimes) and the most
  threads one job gets. Without an answer from ``sinfo`` the profile's ``cores`` applies.
  Snakemake itself is then run as ``python -m ketamap.snakemake_groups``, which forms the groups
  without the faults of Snakemake 9.27 described there (groups that grow, a group submitted again
  and again, running session jobs put into a new group and run twice);
- **no account guessing without accounting:** with neither ``--account`` nor ``SLURM_ACCOUNT`` on
  a cluster whose ``sacct`` does not answer, the plugin's guess (``sacct``) can only fail, so
  ``--slurm-no-account`` is passed (sbatch then uses the user's default account, if any);
- **interrupts.** Snakemake treats SIGTERM as "finish the running jobs first" and SIGINT cancels
  only the jobs it has registered, then may sleep up to a status-polling interval (up to 180 s)
  before it exits. On SIGINT, SIGTERM or SIGHUP this launcher sends SIGINT to Snakemake, cancels
  every queued or running job named with the run's prefix (``scancel``, repeated, which also
  catches a job submitted during the interrupt), kills Snakemake if it has not exited after
  ``--grace`` seconds, waits until ``squeue`` lists none of the run's jobs, and removes the lock
  a killed Snakemake leaves (``snakemake --unlock``), so the next run needs no ``--unlock``. A
  second signal (1 s or more after the first) kills Snakemake without waiting for the grace.

Snakemake runs in its own session so that a Ctrl-C in a terminal reaches this launcher only.
The exit status is Snakemake's, or 128 + the signal number after an interrupt.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

import yaml

PROFILE = "workflow/profiles/slurm"
# The Snakemake group of the per-session jobs, and how many of them one SLURM job runs by default.
SESSION_GROUP = "sessions"
GROUP_SESSIONS = 8
SHIM_DIR = Path(".snakemake/ketamap-slurm/bin")
STATUS_COMMANDS = ("auto", "sacct", "squeue")


def _log(message: str) -> None:
    print(f"ketamap slurm: {message}", file=sys.stderr, flush=True)


def sacct_works(timeout: float = 30.0) -> bool:
    """Whether ``sacct`` answers the executor plugin's status query on this cluster.

    The query has the plugin's shape (``--clusters all``, a start time, ``--name``); it fails with
    "Slurm accounting storage is disabled" on a cluster without accounting and hangs or fails when
    slurmdbd is unreachable.
    """
    if shutil.which("sacct") is None:
        return False
    start = f"{datetime.now() - timedelta(hours=1):%Y-%m-%dT%H:00}"
    cmd = [
        "sacct",
        "-X",
        "--parsable2",
        "--clusters",
        "all",
        "--noheader",
        "--format=JobIdRaw,State",
        "--starttime",
        start,
        "--endtime",
        "now",
        "--name",
        "ketamap-status-probe",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def choose_status_command(setting: str, probe: Callable[[], bool] = sacct_works) -> str:
    """``sacct`` or ``squeue``: the setting itself, or for ``auto`` sacct only when it works."""
    if setting not in STATUS_COMMANDS:
        raise ValueError(
            f"status command {setting!r}: expected one of {', '.join(STATUS_COMMANDS)}"
        )
    if setting != "auto":
        return setting
    return "sacct" if probe() else "squeue"


def min_job_age() -> int | None:
    """slurmctld's MinJobAge (seconds a finished job stays visible to ``squeue``), if readable."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MinJobAge":
            digits = value.strip().split()[0] if value.strip() else ""
            return int(digits) if digits.isdigit() else None
    return None


def session_rules() -> list[str]:
    """The per-session rules of the workflow: ``harmonize_<modality>_session`` for every modality
    of :data:`ketamap.harmonize.HARMONIZERS` harmonized per session (workflow/rules/harmonize.smk)."""
    from ketamap.harmonize import HARMONIZERS

    return [f"harmonize_{h.modality}_session" for h in HARMONIZERS.values() if h.sessions]


def group_arguments(size: int, rules: Sequence[str] | None = None) -> list[str]:
    """``--groups``/``--group-components`` that batch up to ``size`` session jobs per SLURM job;
    none when ``size`` is 1 or less (each session job is submitted alone)."""
    rules = session_rules() if rules is None else list(rules)
    if size <= 1 or not rules:
        return []
    return [
        "--groups",
        *(f"{rule}={SESSION_GROUP}" for rule in rules),
        "--group-components",
        f"{SESSION_GROUP}={size}",
    ]


def node_cpus(partition: str | None = None) -> int | None:
    """The CPUs of the smallest node of the partition (the default one when None), from ``sinfo``;
    None when ``sinfo`` does not answer or lists no node."""
    cmd = ["sinfo", "--Node", "--noheader", "--format=%c"]
    if partition:
        cmd.append(f"--partition={partition}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    counts = [int(v) for v in proc.stdout.split() if v.isdigit() and int(v) > 0]
    return min(counts) if proc.returncode == 0 and counts else None


def profile_default_resources(profile: Path) -> list[str]:
    """The profile's ``default-resources`` as ``name=value`` items."""
    config = yaml.safe_load((profile / "config.yaml").read_text()) or {}
    resources = config.get("default-resources") or {}
    if isinstance(resources, dict):
        return [f"{name}={value}" for name, value in resources.items()]
    return [str(item) for item in resources]


def snakemake_command(
    *,
    python: str,
    profile: Path,
    status_command: str,
    prefix: str,
    account: str | None,
    partition: str | None,
    extra: Sequence[str],
    group_sessions: int = 1,
    cores: int | None = None,
    session_rules: Sequence[str] | None = None,
) -> list[str]:
    """The Snakemake command line of a run (Snakemake with stable groups when it groups)."""
    groups = group_arguments(group_sessions, session_rules)
    cmd = [
        python,
        "-m",
        "ketamap.snakemake_groups" if groups else "snakemake",
        "--profile",
        str(profile),
        "--slurm-status-command",
        status_command,
        "--slurm-jobname-prefix",
        prefix,
    ]
    if not account and status_command == "squeue":
        cmd.append("--slurm-no-account")
    if cores:
        cmd += ["--cores", str(cores)]
    cmd += groups
    slurm = [f"slurm_account={account}"] if account else []
    slurm += [f"slurm_partition={partition}"] if partition else []
    if slurm:
        cmd += ["--default-resources", *profile_default_resources(profile), *slurm]
    return [*cmd, *extra]


def srun_shim(slurm_conf: str, shim_dir: Path = SHIM_DIR) -> Path | None:
    """An ``srun`` that sets ``SLURM_CONF`` again before running the real one (see above).

    Returns its folder (to go first on ``PATH``), or None when no ``srun`` is found.
    """
    real = shutil.which("srun")
    if real is None:
        return None
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / "srun"
    shim.write_text(
        "#!/bin/sh\n"
        "# Written by python -m ketamap.slurm: the SLURM executor's job step removes SLURM_CONF\n"
        "# from the environment of the srun it starts; this puts it back.\n"
        f"SLURM_CONF={shlex.quote(slurm_conf)}\n"
        "export SLURM_CONF\n"
        f'exec {shlex.quote(real)} "$@"\n'
    )
    shim.chmod(0o755)
    return shim_dir.resolve()


def run_job_ids(prefix: str, user: str | None = None) -> list[str]:
    """Queued or running SLURM jobs of this user whose name starts with the run's prefix."""
    cmd = ["squeue", "--noheader", "--format=%i|%j", "--user", user or getpass.getuser()]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    ids = []
    for line in out.splitlines():
        job_id, _, name = line.strip().partition("|")
        if job_id and name.startswith(f"{prefix}_"):
            ids.append(job_id)
    return ids


def cancel_run_jobs(prefix: str) -> list[str]:
    """``scancel`` every queued or running job of the run; returns the ids it cancelled."""
    ids = run_job_ids(prefix)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60, check=False)
    return ids


class _Interrupt:
    """Records the signals received; the main loop acts on them."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.times: list[float] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        self.times.append(time.monotonic())

    def repeated(self) -> bool:
        """A second interrupt, at least 1 s after the first: not a copy of the first delivered at
        the same moment (a terminal signals the whole process group, and make passes SIGTERM on to
        the recipe it runs, which is this launcher)."""
        return any(t - self.times[0] >= 1.0 for t in self.times[1:])


def _wait(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait for the process at most ``seconds``; True when it has exited."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def _stop(
    proc: subprocess.Popen[bytes],
    prefix: str,
    interrupt: _Interrupt,
    grace: float,
    unlock: list[str],
) -> int:
    signum = interrupt.signals[0]
    _log(f"{signal.Signals(signum).name}: cancelling the SLURM jobs of this run (named {prefix}_*)")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    cancelled: set[str] = set()
    deadline = time.monotonic() + grace
    while True:
        cancelled.update(cancel_run_jobs(prefix))
        exited = _wait(proc, 1.0)
        if exited or time.monotonic() > deadline or interrupt.repeated():
            break
    killed = False
    if not exited:
        _log(f"snakemake still running {grace:.0f} s after SIGINT: killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = True
    # Snakemake may have submitted a job between the last sweep and its exit.
    deadline = time.monotonic() + 120
    while True:
        cancelled.update(cancel_run_jobs(prefix))
        if not run_job_ids(prefix) or time.monotonic() > deadline:
            break
        time.sleep(1)
    left = run_job_ids(prefix)
    if cancelled:
        _log(f"cancelled SLURM jobs {', '.join(sorted(cancelled, key=_job_order))}")
    if left:
        _log(f"SLURM jobs still listed by squeue: {', '.join(left)}")
    if killed:
        _log("removing the lock the killed snakemake left (snakemake --unlock)")
        subprocess.run(unlock, capture_output=True, check=False)
    return 128 + signum


def _job_order(job_id: str) -> tuple[int, str]:
    head = job_id.split("_")[0]
    return (int(head) if head.isdigit() else 0, job_id)


def run(
    extra: Sequence[str],
    *,
    status: str = "auto",
    account: str | None = None,
    partition: str | None = None,
    profile: Path = Path(PROFILE),
    grace: float = 20.0,
    group_sessions: int = GROUP_SESSIONS,
) -> int:
    """Run the workflow through SLURM; returns the exit status."""
    status_command = choose_status_command(status)
    why = {
        "sacct": " (sacct answers: job accounting is on)",
        "squeue": " (sacct does not answer: no job accounting on this cluster)",
    }
    _log(f"job states from {status_command}{why[status_command] if status == 'auto' else ''}")
    if status_command == "squeue":
        age = min_job_age()
        if age is not None and age < 300:
            _log(
                f"warning: MinJobAge is {age} s; squeue forgets finished jobs after that, "
                "so a job finishing while the status checks are slower than that may never be seen"
            )
    prefix = f"ketamap-{secrets.token_hex(4)}"
    _log(f"SLURM job names of this run start with {prefix}_")
    cores = node_cpus(partition)
    rules = session_rules()
    if group_sessions > 1 and rules:
        _log(
            f"session jobs ({', '.join(rules)}) submitted {group_sessions} to a SLURM job, "
            + (
                f"run {cores} at a time (the CPUs of a node)"
                if cores
                else "run as the profile's cores allow (sinfo gave no node CPUs)"
            )
        )
    base = [sys.executable, "-m", "snakemake"]

    def command(extra: Sequence[str], group_sessions: int = 1) -> list[str]:
        return snakemake_command(
            python=sys.executable,
            profile=profile,
            status_command=status_command,
            prefix=prefix,
            account=account,
            partition=partition,
            extra=extra,
            group_sessions=group_sessions,
            cores=cores,
            session_rules=rules,
        )

    cmd = command(extra, group_sessions)
    unlock = [*base, "--profile", str(profile), *extra, "--unlock"]
    env = dict(os.environ)
    if env.get("SLURM_CONF"):
        shim = srun_shim(str(Path(env["SLURM_CONF"]).resolve()))
        if shim is not None:
            env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    interrupt = _Interrupt()
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in handled}
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, env=env)
        while not interrupt.signals:
            if _wait(proc, 0.5):
                return proc.returncode
        return _stop(proc, prefix, interrupt, grace, unlock)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ketamap.slurm",
        description="Run the ketamap workflow on the SLURM cluster this machine submits to.",
    )
    parser.add_argument(
        "--status-command",
        choices=STATUS_COMMANDS,
        default=os.environ.get("SLURM_STATUS", "auto"),
        help="how job states are polled: sacct (needs job accounting), squeue, or auto: "
        "sacct when it answers, else squeue (default: $SLURM_STATUS or auto)",
    )
    parser.add_argument(
        "--account",
        default=os.environ.get("SLURM_ACCOUNT") or None,
        help="SLURM account (default: $SLURM_ACCOUNT; none: the cluster's default)",
    )
    parser.add_argument(
        "--partition",
        default=os.environ.get("SLURM_PARTITION") or None,
        help="SLURM partition (default: $SLURM_PARTITION; none: the cluster's default)",
    )
    parser.add_argument(
        "--group-sessions",
        type=int,
        default=int(os.environ.get("SLURM_GROUP_SESSIONS") or GROUP_SESSIONS),
        help="how many short per-session jobs one SLURM job runs; 1: one SLURM job each "
        f"(default: $SLURM_GROUP_SESSIONS or {GROUP_SESSIONS})",
    )
    parser.add_argument("--profile", type=Path, default=Path(PROFILE))
    parser.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds Snakemake gets to exit after an interrupt before it is killed",
    )
    parser.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    extra = list(args.snakemake_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return run(
        extra,
        status=args.status_command,
        account=args.account,
        partition=args.partition,
        profile=args.profile,
        grace=args.grace,
        group_sessions=args.group_sessions,
    )


if __name__ == "__main__":
    raise SystemExit(main())
