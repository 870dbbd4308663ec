"""The fork server of a local run: job steps start in a process that has imported the libraries once.

A ketamap job's step runs in a process of its own. In a new interpreter it would first pay its
imports: pandas and pyarrow in every job that writes a table, statsmodels and SciPy's statistics
in every pooled analysis (2 s per job, more than most steps take). On a local run (Snakemake's
local executor, ``jobs.forkserver``, the default) the workflow's ``onstart`` starts this server,
which imports those libraries once and then forks one child per job:

- the job (its ``run:`` block, in a thread of Snakemake's process, through
  :func:`ketamap.adapter.run_job`) connects to the server's socket and sends its step
  (``module:function``), its arguments, its working directory, its environment and its standard
  streams (the file descriptors themselves, ``SCM_RIGHTS``);
- the server forks; the child takes the job's streams, folder and environment, runs the step
  exactly as a process of its own would have (same function, same arguments, same log file),
  sends back its exit status and exits;
- a job whose connection closes (its client gone: Snakemake killed, a test's client process
  stopped) takes its child with it: the child, which watches the connection, exits at once.

Nothing else changes: same step, same arguments, same bytes (a test compares every output of a run
with the server and without it). A job that cannot reach the server (none started, not ready
yet, another machine: SLURM jobs never see it) runs its step in a new process
(``python -m ketamap.adapter``).

Why by hand: :mod:`multiprocessing`'s forkserver serves only the process that started it, and
needs the work as a picklable callable from that process; here the clients are threads of
Snakemake's process (and, in the tests, unrelated processes), which must hand over their streams,
folder and environment. The server trusts only processes of its own user (``SO_PEERCRED``) on a
Linux abstract socket named by the run (nothing on disk to clean).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The server's address, in the environment of the process that started it: Snakemake's, whose
# threads run the jobs' run: blocks (and whatever else it starts inherits it).
ENV = "KETAMAP_FORKSERVER"

# Imported once by the server: what the steps import when they run (the modalities' readers, the
# pooled modules and their statistics, the figures), in the order the workflow's jobs need them.
# A module missing here is imported by the child, as a process of its own would; one that fails
# to import is left to the child as well.
PRELOAD = (
    # the fetches (first to run)
    "ketamap.registry",
    "dvc.api",
    "dvc.scm",
    # every table
    "pandas",
    "pyarrow.parquet",
    "ketamap.schemas",
    # the harmonizers
    "ketamap.harmonize.clinical",
    "ketamap.harmonize.behaviour",
    "scipy.signal",
    "mne",
    "ketamap.harmonize.ieeg",
    "nibabel",
    "ketamap.harmonize.pet",
    "ketamap.harmonize.scatter",
    # the pooled analyses and figures (last to run)
    "scipy.stats",
    "statsmodels.api",
    "statsmodels.formula.api",
    "statsmodels.stats.multitest",
    "statsmodels.stats.proportion",
    "patsy",
    "neuroHarmonize",
    "matplotlib.pyplot",
    "ketamap.figures",
    "ketamap.pooled.clinical",
    "ketamap.pooled.pet",
    "ketamap.pooled.ieeg",
    "ketamap.pooled.behaviour",
    "ketamap.pooled.stats",
    "ketamap.manifest",
)

# A run with fewer jobs to start keeps no server (its imports cost one core 2-4 s).
MIN_JOBS = 4

_HEADER = struct.Struct("!QB")  # payload length, which of stdin/stdout/stderr follow as fds
_STATUS = struct.Struct("!i")


# ---------------------------------------------------------------------------------------------
# The job's side


def submit(
    step: str, kwargs: dict[str, Any], *, log_file: str | None, limits: Any, startup: float
) -> int | None:
    """Run ``step`` (``module:function``) with ``kwargs`` in a child of the run's fork server and
    return its exit status; None when there is no server to reach (the caller runs the step)."""
    address = os.environ.get(ENV)
    if not address:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect("\0" + address)
    except OSError:
        sock.close()
        return None
    with sock:
        fds = [fd for fd in (0, 1, 2) if _is_open(fd)]
        request = {
            "step": step,
            "kwargs": kwargs,
            "log_file": log_file,
            "limits": limits,
            "startup": startup,
            "sent": time.time(),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "fds": fds,
        }
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        mask = sum(1 << fd for fd in fds)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            socket.send_fds(sock, [_HEADER.pack(len(payload), mask)], fds)
            sock.sendall(payload)
        except OSError:
            return None  # the server went away before it took the job: nothing ran
        status = _recv_exactly(sock, _STATUS.size)
    if len(status) < _STATUS.size:
        print(
            f"ketamap: the fork server's process for step {step} ended without an exit status "
            "(killed, or out of memory); see the job's log",
            file=sys.stderr,
        )
        return 1
    return int(_STATUS.unpack(status)[0])


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


# ---------------------------------------------------------------------------------------------
# The workflow's side: start and stop the server (Snakefile onstart / onsuccess / onerror)

_server: subprocess.Popen[bytes] | None = None


def start(log_path: str | Path) -> str | None:
    """Start the run's fork server (its messages go to ``log_path``) and give its address to the
    jobs this process starts (the environment variable :data:`ENV`); return the address.

    The server imports :data:`PRELOAD` before it listens: jobs that start meanwhile run their
    steps themselves. It exits with this process (``stop``, or its parent's death)."""
    import atexit

    global _server
    if _server is not None:
        return os.environ[ENV]
    address = f"ketamap-forkserver-{os.getpid()}-{secrets.token_hex(8)}"
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        _server = subprocess.Popen(
            [sys.executable, "-m", "ketamap.jobserver", address, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    os.environ[ENV] = address
    atexit.register(stop)
    return address


def stop() -> None:
    """Stop the fork server this process started (if any); its address leaves the environment."""
    global _server
    os.environ.pop(ENV, None)
    if _server is None:
        return
    server, _server = _server, None
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# ---------------------------------------------------------------------------------------------
# The server


def serve(address: str, parent: int, preload: tuple[str, ...] = PRELOAD) -> None:
    """Listen at once and fork a child per connection until ``parent`` is gone or SIGTERM;
    import ``preload``, in its order, one module at a time whenever no job is waiting.

    A job that comes early is forked from a server that has imported part of ``preload`` (its
    step imports the rest, as a process of its own would, only less); later ones find everything
    imported. A job never waits for more than the one import in progress. ``preload`` is ordered
    by when the workflow needs it: the fetches' modules first, the pooled analyses' last."""
    _die_with_parent()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + address)
    listener.listen(128)
    # Children are reaped by the kernel: the server never waits for one (it keeps one thread, so
    # every fork is of a process holding no lock, the import lock included).
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Ctrl-C reaches the whole process group: the children stop their steps, the server stays
    # until its parent stops it or dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pending = list(preload)
    importing = 0.0

    def stopped(_signum: int, _frame: Any) -> None:  # SIGTERM (the run ended): say how far
        done = len(preload) - len(pending)
        print(
            f"forkserver: stopped; {done} of {len(preload)} preloaded, "
            f"{len(sys.modules)} modules imported in {importing:.1f} s",
            flush=True,
        )
        os._exit(0)

    signal.signal(signal.SIGTERM, stopped)  # a child resets it (_child)
    print("forkserver: listening", flush=True)
    while os.getppid() == parent:
        ready, _, _ = select.select([listener], [], [], 0.0 if pending else 1.0)
        if not ready:
            if pending:
                name = pending.pop(0)
                started = time.perf_counter()
                try:
                    importlib.import_module(name)
                except Exception as exc:  # the child imports it again, and reports it
                    print(
                        f"forkserver: not preloaded {name}: {type(exc).__name__}: {exc}",
                        flush=True,
                    )
                importing += time.perf_counter() - started
                if not pending:
                    print(
                        f"forkserver: {len(sys.modules)} modules imported in {importing:.1f} s",
                        flush=True,
                    )
            continue
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        if not _same_user(conn):
            conn.close()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            listener.close()
            _child(conn, preloaded=f"{len(preload) - len(pending)}/{len(preload)}")  # no return
        conn.close()


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (the loop also checks, every second)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child(conn: socket.socket, preloaded: str) -> None:
    """A forked child: take the job's streams, folder and environment, run its step, report.
    ``preloaded``: how much of the server's preload it had imported at the fork (``k/n``)."""
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # steps may wait for their own children
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
        if len(header) < _HEADER.size:
            os._exit(1)
        size, mask = _HEADER.unpack(header)
        targets = [fd for fd in (0, 1, 2) if mask & (1 << fd)]
        for target, fd in zip(targets, fds, strict=False):
            os.dup2(fd, target)
            os.close(fd)
        request = pickle.loads(_recv_exactly(conn, size))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV, None)  # a step's own subprocesses run as they would without the server
        # The job's client is gone (Snakemake killed): its connection closes, the child ends.
        threading.Thread(target=_exit_when_closed, args=(conn,), daemon=True).start()
        from ketamap.adapter import run_request

        startup = request["startup"] + max(time.time() - request["sent"], 0.0)
        status = run_request(request, startup=startup, forked=preloaded)
    except BaseException:  # reported on the job's stderr, never the server's
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(Exception):
            conn.sendall(_STATUS.pack(status))
        os._exit(status)


def _exit_when_closed(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while conn.recv(1):
            pass
    os._exit(1)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
