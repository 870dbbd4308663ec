"""The one way a workflow job runs a ketamap step.

Each rule's ``run:`` block names a package function (``"module:function"``) and its arguments and
calls :func:`run_job`. The step never runs in the Snakemake process (which imports none of the
heavy libraries and runs its jobs' ``run:`` blocks in threads): on a local run it runs in a child of
the fork server (:mod:`ketamap.jobserver`), which imported the libraries once; otherwise (no
server, a cluster node) in a fresh ``python -m ketamap.adapter`` process. Either way
:func:`run_here` sends log lines to the rule's log file and turns a
:class:`~ketamap.errors.KetamapError` into one clear message and a non-zero exit, never a traceback.
A step that succeeds logs one line, ``step <function> compute <s> s, start-up <s> s``: its own
time, and the job's time before it (from its ``run:`` block's start: the hand-over to the server
and the fork, or the new interpreter and its imports), followed by ``, in the fork server`` when it
ran there.

Why not Snakemake's ``script:``: each such job is a new interpreter that first imports Snakemake
itself to unpickle its job (0.15 s) before any of the step's own imports, 0.2-0.3 s a job in all,
a third of the compute of the default scenario's 64 jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ketamap.errors import KetamapError

log = logging.getLogger("ketamap")

_LENGTH = struct.Struct("!Q")  # the request's length, before it on a step process's stdin


class StepError(Exception):
    """A job's step failed; its message is already on stderr and in the job's log."""


def configure_logging(log_file: str | Path | None) -> None:
    """Log INFO and above to ``log_file`` (and warnings to stderr)."""
    root = logging.getLogger("ketamap")
    for old in list(root.handlers):
        old.close()
        root.removeHandler(old)
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file, mode="w")
        handler.setFormatter(fmt)
        root.addHandler(handler)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(fmt)
    root.addHandler(err)


def process_age() -> float:
    """Seconds since this process started (Linux: ``/proc/self/stat``, to 10 ms); NaN elsewhere."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, since boot
        return max(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 0.0)
    except (OSError, IndexError, ValueError, AttributeError):
        return float("nan")


def run_job(func: str, job_log: Any, job_config: Any, /, **kwargs: Any) -> None:
    """Run step ``func`` (``"module:function"``) with ``kwargs`` for a rule's ``run:`` block; raise
    :class:`StepError` when it fails (its message is on stderr and in the job's log).

    ``job_log`` is the job's ``log`` (the step logs to its first file), ``job_config`` the
    workflow's config (its ``limits`` bound what the readers accept). The step runs in a child of
    the run's fork server when one answers, else in a new process; it never runs here, in
    Snakemake's process. ``kwargs`` are handed over as builtin types (:func:`_plain`)."""
    started = time.monotonic()
    request = {
        "step": func,
        "kwargs": _plain(kwargs),
        "log_file": str(job_log[0]) if len(job_log) else None,
        "limits": _plain((job_config or {}).get("limits")),
    }
    status = None
    if os.environ.get("KETAMAP_FORKSERVER"):
        from ketamap import jobserver

        status = jobserver.submit(request, startup=time.monotonic() - started)
    if status is None:
        status = _run_in_process(request, started)
    if status:
        log_file = request["log_file"]
        raise StepError(
            f"step {func} failed (exit status {status}); its message is above"
            + (f" and in {log_file}" if log_file else "")
        )


def _run_in_process(request: dict[str, Any], started: float) -> int:
    """Run the step of ``request`` (:func:`run_job`'s) in a new ``python -m ketamap.adapter``
    process (the request on its stdin, which stays open: the process ends when this one does) and
    return its exit status."""
    env = dict(os.environ)
    env.pop("KETAMAP_FORKSERVER", None)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # start-up so far, before the new process (its own age is added when the step starts)
    request = {**request, "startup": time.monotonic() - started}
    payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ketamap.adapter"], stdin=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(_LENGTH.pack(len(payload)) + payload)
        proc.stdin.flush()
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def exit_when_closed(fd: int) -> None:
    """End this process (exit status 1) as soon as ``fd`` reaches its end: the job that handed it
    its step (over this pipe or socket) is gone, Snakemake stopped or killed. A daemon thread
    watches; the job never writes to ``fd`` after its request."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _serve_one() -> int:
    """``python -m ketamap.adapter``: read one request from stdin, run its step, exit with its
    status; exit at once when stdin closes (the job that started this process is gone)."""

    def read(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = os.read(0, size - len(data))
            if not chunk:
                break
            data += chunk
        return data

    header = read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return 1
    request = pickle.loads(read(_LENGTH.unpack(header)[0]))
    exit_when_closed(0)
    return run_request(request, startup=request["startup"] + process_age())


def run_request(request: dict[str, Any], *, startup: float, forked: str | None = None) -> int:
    """Run a handed-over job's step here (:func:`run_here`) and return its exit status."""
    try:
        run_here(
            request["step"],
            request["kwargs"],
            log_file=request["log_file"],
            limits=request["limits"],
            startup=startup,
            forked=forked,
        )
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def run_here(
    func: Callable[..., Any] | str,
    kwargs: dict[str, Any],
    *,
    log_file: str | None,
    limits: Any,
    startup: float,
    forked: str | None = None,
) -> Any:
    """Run a job's step in this process (a fork server's child or ``python -m ketamap.adapter``,
    see :func:`run_job`): log to ``log_file``, apply the config's reader ``limits``, and exit 1
    with one message when it fails. ``startup``: the job's seconds before its step (logged);
    ``forked``: this process is the fork server's child for the job, forked when the server had
    imported that much of its preload (``k/n``); its step line says so, with ``preloaded k/n``
    when ``k < n`` (the step imported the rest itself)."""
    from ketamap import limits as file_limits

    started = time.perf_counter()
    configure_logging(log_file)
    try:
        file_limits.configure(limits)
        step = _resolve(func)
        result = step(**kwargs)
        log.info(
            "step %s.%s compute %.3f s, start-up %.3f s%s",
            step.__module__,
            step.__qualname__,
            time.perf_counter() - started,
            startup,
            _forked_note(forked),
        )
        return result
    except KetamapError as exc:
        log.error("%s", exc)
        sys.stderr.flush()
        raise SystemExit(1) from None
    except Exception as exc:
        # Not a user error: a bug, or input no reader anticipated. The job log gets the traceback
        # (it is never left empty), the console one line naming the log.
        log.error(
            "unexpected %s: %s (a ketamap bug or an input nothing checks yet; traceback in %s)",
            type(exc).__name__,
            str(exc)[:300],
            log_file or "the job's stderr",
        )
        # INFO: the log file only (the console shows warnings and errors).
        log.info("traceback:\n%s", traceback.format_exc())
        sys.stderr.flush()
        raise SystemExit(1) from None


def _forked_note(forked: str | None) -> str:
    if not forked:
        return ""
    done, _, total = forked.partition("/")
    return (f", preloaded {forked}" if done != total else "") + ", in the fork server"


def _resolve(func: Callable[..., Any] | str) -> Callable[..., Any]:
    if not isinstance(func, str):
        return func
    import importlib

    module, _, name = func.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def _plain(value: Any) -> Any:
    """``value`` in builtin types only (Snakemake's paths are str subclasses, its lists
    Namedlists): what the fork server's child unpickles without importing Snakemake."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def session_folders(inputs: Any) -> list[str] | None:
    """A job's ``sessions`` input as a list of paths (Snakemake gives one path as a string), or
    None when the job has none (the fetch pulled whole sites, or a site without sessions)."""
    # (a Namedlist: `in` would look among its paths, not its names)
    found = getattr(inputs, "sessions", None)
    if found is None:
        return None
    return ([found] if isinstance(found, str) else [str(p) for p in found]) or None


if __name__ == "__main__":
    status = _serve_one()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
