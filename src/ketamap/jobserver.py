"""The fork server of a local run: job steps start in a process that has imported the libraries once.

A ketamap job's step runs in a process of its own. In a new interpreter it would first pay its
imports: pandas and pyarrow in every job that writes a table, statsmodels and SciPy's statistics
in every pooled analysis (2 s per job, more than most steps take). On a local run (Snakemake's
local executor, ``jobs.forkserver``, the default) the workflow starts this server while it plans
the run; it imports those libraries once (while it already serves, :func:`serve`) and forks one
child per job:

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

# Each link of the server's chain imports at least this many seconds' worth of PRELOAD before it
# takes over (fewer, longer links: fewer processes; more, shorter ones: jobs see imports sooner).
HANDOVER_S = 0.25

_HEADER = struct.Struct("!QB")  # payload length, which of stdin/stdout/stderr follow as fds
_STATUS = struct.Struct("!i")


# ---------------------------------------------------------------------------------------------
# The job's side


def submit(request: dict[str, Any], *, startup: float) -> int | None:
    """Run the step of ``request`` (:func:`ketamap.adapter.run_job`'s: step, kwargs, log_file,
    limits) in a child of the run's fork server and return its exit status; None when there is no
    server to reach (the caller runs the step). ``startup``: the job's seconds so far."""
    step = request["step"]
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
            **request,
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

    The server listens at once; its chain of links imports :data:`PRELOAD` meanwhile (see
    :func:`serve`). It exits with this process (``stop``, or its parent's death)."""
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
    """Listen at once and fork a child per connection until ``parent`` is gone or SIGTERM, while
    ``preload`` is imported, in its order, by a successor that takes over when it has imported it.

    A job is never kept waiting for an import: the serving process forks it at once, from what it
    has imported so far (a job that comes early imports the rest itself, as a process of its own
    would, only less). The imports happen in a forked *successor* (the next link of a chain):
    it imports the next modules (at least :data:`HANDOVER_S` seconds' worth), then takes over
    the listening socket and forks the next successor, and its predecessor retires (it stops
    accepting and stays only as the parent of the chain, so that the chain dies with the process
    that started the server). ``preload`` is ordered by when the workflow needs it: the fetches'
    modules first, the pooled analyses' last.

    Why a chain rather than imports between jobs in one process: an import cannot be interrupted
    to fork a job (a child forked by another thread could inherit a held import lock), so a job
    arriving during SciPy's or statsmodels' import waited up to a second for it; and a running
    import cannot be handed to another process. Forking the importer leaves the serving process
    free, and the importer's result is, once it takes over, the state every later job starts
    from."""
    _die_with_parent()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + address)
    listener.listen(128)
    # Children are reaped by the kernel: the server never waits for one (each link is single
    # threaded, so every fork is of a process holding no lock, the import lock included).
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Ctrl-C reaches the whole process group: the children stop their steps, the server stays
    # until its parent stops it or dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    link = _Link(preload, parent)
    signal.signal(signal.SIGTERM, link.stopped)  # a job's child resets it (_child)
    print("forkserver: listening", flush=True)
    while True:
        if link.done < len(preload) and link.fork_successor():
            link.import_next()  # the successor: imports, then serves (the loop's next turn)
            continue
        link.serve(listener)  # returns when the successor took over (never for the last link)
        listener.close()  # connections go to the successor alone from now on
        link.retire()  # no return


@contextlib.contextmanager
def _no_sigterm() -> Any:
    """SIGTERM waits (blocked, then handled) until the block ends: what it holds is atomic for
    the stop handler (_Link.stopped)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


class _Link:
    """One process of the server's chain: what it has imported, its successor, how it stops."""

    def __init__(self, preload: tuple[str, ...], parent: int) -> None:
        self.preload = preload
        self.parent = parent  # the process that started the server, then each link's predecessor
        self.done = 0  # modules of preload imported
        # Seconds the chain spent importing them: wall, and CPU (the links import alongside the
        # run's jobs, so their wall time counts the cores' sharing; their CPU time is what the
        # imports took from the jobs)
        self.importing = 0.0
        self.importing_cpu = 0.0
        self.up: int | None = None  # pipe to the predecessor: one byte when this link takes over
        self.down: int | None = None  # pipe from the successor (its end closes when it exits)
        self.successor: int | None = None
        self.serving = True  # False while this link imports (it stops silently)

    # -- the chain

    def fork_successor(self) -> bool:
        """Fork the next link; True in it (it imports next), False in this one (it serves)."""
        read, write = os.pipe()
        sys.stdout.flush()
        pid = os.fork()
        if pid:
            os.close(write)
            self.down, self.successor = read, pid
            return False
        os.close(read)
        if self.up is not None:
            os.close(self.up)  # the predecessor's pipe is this link's parent's business
        self.up, self.down, self.successor = write, None, None
        self.serving = False
        self.parent = os.getppid()
        _die_with_parent()
        if os.getppid() != self.parent:  # the predecessor died before the line above
            os._exit(0)
        return True

    def import_next(self) -> None:
        """Import the next modules of preload (at least HANDOVER_S seconds' worth, or the rest),
        then take over: tell the predecessor, which stops accepting."""
        started, cpu = time.perf_counter(), time.process_time()
        while self.done < len(self.preload) and time.perf_counter() - started < HANDOVER_S:
            name = self.preload[self.done]
            try:
                importlib.import_module(name)
            except Exception as exc:  # the child imports it again, and reports it
                print(f"forkserver: not preloaded {name}: {type(exc).__name__}: {exc}", flush=True)
            self.done += 1
        self.importing += time.perf_counter() - started
        self.importing_cpu += time.process_time() - cpu
        assert self.up is not None
        with _no_sigterm():  # the link that says it took over is the one that reports the stop
            self.serving = True
            os.write(self.up, b"+")
        if self.done == len(self.preload):
            print(
                f"forkserver: {len(sys.modules)} modules imported in {self._spent()}",
                flush=True,
            )

    def serve(self, listener: socket.socket) -> None:
        """Fork a child per connection until the successor takes over (or the parent is gone)."""
        while os.getppid() == self.parent:
            down = self.down
            ready, _, _ = select.select(
                [listener.fileno(), *([] if down is None else [down])], [], [], 1.0
            )
            if down is not None and down in ready:
                with _no_sigterm():  # as the successor's side (import_next): one link reports
                    self.serving = not os.read(down, 1)
                if not self.serving:
                    return  # the successor took over
                # it died importing (killed, out of memory): this link serves on, as it is
                os.close(down)
                self.down = self.successor = None
                print(
                    f"forkserver: preloading stopped at {self.done} of {len(self.preload)}",
                    flush=True,
                )
            if listener.fileno() not in ready:
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
            if os.fork() == 0:
                listener.close()
                for fd in (self.up, self.down):
                    if fd is not None:
                        os.close(fd)
                _child(conn, preloaded=f"{self.done}/{len(self.preload)}")  # no return
            conn.close()
        os._exit(0)  # the parent is gone: the successor follows (PR_SET_PDEATHSIG)

    def retire(self) -> None:
        """Stay as the successor's parent until it or this link's parent is gone."""
        while os.getppid() == self.parent and self.down is not None:
            ready, _, _ = select.select([self.down], [], [], 1.0)
            if ready and not os.read(self.down, 1):
                break  # the successor exited
        os._exit(0)

    def _spent(self) -> str:
        return f"{self.importing:.1f} s ({self.importing_cpu:.1f} s CPU)"

    def stopped(self, _signum: int, _frame: Any) -> None:
        """SIGTERM (the run ended, or the predecessor stopped): stop the successor and wait for it;
        the serving link says how far the chain got. Nothing else prints."""
        took_over = False
        if self.successor is not None and self.down is not None:
            with contextlib.suppress(OSError):
                os.kill(self.successor, signal.SIGTERM)
            end = time.monotonic() + 10
            with contextlib.suppress(OSError):
                while time.monotonic() < end:
                    ready, _, _ = select.select([self.down], [], [], max(end - time.monotonic(), 0))
                    chunk = os.read(self.down, 1) if ready else b""
                    took_over |= chunk == b"+"
                    if not chunk:
                        break
        if self.serving and not took_over:
            print(
                f"forkserver: stopped; {self.done} of {len(self.preload)} preloaded, "
                f"{len(sys.modules)} modules imported in {self._spent()}",
                flush=True,
            )
        os._exit(0)


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
        from ketamap.adapter import exit_when_closed, run_request

        # The job's client is gone (Snakemake killed): its connection closes, the child ends.
        exit_when_closed(conn.fileno())

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


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
