"""``make run`` after a crash needs no manual step: a stale Snakemake lock is cleared, a live run
is still refused.

Snakemake locks its working directory (``.snakemake/locks``) and never unlocks after a kill -9 or a
power cut: the next run stops and asks for ``--unlock``. Snakemake cannot tell a dead run from a
live one; this guard can. Every ``make run`` holds an exclusive ``flock`` on
``.snakemake/ketamap-run.lock`` for as long as it runs (the kernel releases it when the process
dies, however it dies). On start:

- the flock is held by someone else: another ``make run`` is live here; refuse, naming its pid;
- a Snakemake process (started without ``make``) has this directory as its working directory
  (read from ``/proc`` where there is one): refuse as well;
- otherwise any Snakemake lock left here belongs to a dead run: remove it, say so, and go on.

Then the guard replaces itself with the command (``exec``), which inherits the flock.

Usage: ``python -m ketamap.runguard -- snakemake ...``.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

LOCK = Path(".snakemake") / "ketamap-run.lock"
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"


def _snakemake_elsewhere(workdir: Path) -> int | None:
    """The pid of a live Snakemake process working in ``workdir`` other than our ancestors, or None
    (also None where there is no /proc: then the flock is the only evidence)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ours = set()
    pid = os.getpid()
    while pid > 1:
        ours.add(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    target = workdir.resolve()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if not any(b"snakemake" in part for part in cmdline[:3]):
                continue
            if Path(os.readlink(entry / "cwd")).resolve() == target:
                return int(entry.name)
        except OSError:
            continue
    return None


def acquire(workdir: Path = Path(".")) -> int:
    """Take the run lock and clear a dead run's Snakemake locks; return the lock's fd (inheritable).

    Raises SystemExit with a message when another run is live."""
    lock = workdir / LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        raise SystemExit(
            f"make run: another run is in progress in {workdir.resolve()} (pid {other}); "
            "wait for it to finish or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    locks = sorted((workdir / SNAKEMAKE_LOCKS).glob("*.lock"))
    if locks:
        live = _snakemake_elsewhere(workdir)
        if live is not None:
            raise SystemExit(
                f"make run: Snakemake (pid {live}) is running in {workdir.resolve()}; wait for it "
                "to finish or stop it"
            )
        for stale in locks:
            stale.unlink(missing_ok=True)
        print(
            f"make run: removed {len(locks)} stale Snakemake lock(s) left by an interrupted run "
            "(no run is alive here); resuming",
            file=sys.stderr,
        )
    os.set_inheritable(fd, True)
    return fd


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise SystemExit("usage: python -m ketamap.runguard -- COMMAND ...")
    acquire()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
