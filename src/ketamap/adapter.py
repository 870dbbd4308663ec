"""The one way a workflow script runs a ketamap step.

Each script in ``workflow/scripts`` unpacks the ``snakemake`` object and hands a package function
to :func:`run_step`, which sends log lines to the rule's log file and turns a
:class:`~ketamap.errors.KetamapError` into one clear message and a non-zero exit, never a traceback.
A step that succeeds logs one line, ``step <function> compute <s> s, start-up <s> s``: its own
time, and the job process's time before it (interpreter, Snakemake's script preamble, imports),
followed by ``, in the fork server`` when it ran there (:mod:`ketamap.jobserver`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ketamap.errors import KetamapError

log = logging.getLogger("ketamap")


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


def run_step(snakemake: Any, func: Callable[..., Any] | str, **kwargs: Any) -> Any:
    """Run ``func(**kwargs)`` for a Snakemake job; exit 1 with one message on a KetamapError.

    ``func`` is the step or its name (``"module:function"``: the job process then imports nothing
    of it). On a local run with the fork server (:mod:`ketamap.jobserver`) the step runs in a
    child of the server, which imported the libraries once; otherwise here. Either way the same
    function gets the same arguments and the job exits with its status."""
    startup = process_age()
    log_file = snakemake.log[0] if len(snakemake.log) else None
    limits = (getattr(snakemake, "config", None) or {}).get("limits")
    if os.environ.get("KETAMAP_FORKSERVER"):
        from ketamap import jobserver

        status = jobserver.submit(
            _step_name(func), _plain(kwargs), log_file=log_file, limits=limits, startup=startup
        )
        if status is not None:
            if status:
                raise SystemExit(status)
            return None
    return run_here(func, kwargs, log_file=log_file, limits=limits, startup=startup)


def run_here(
    func: Callable[..., Any] | str,
    kwargs: dict[str, Any],
    *,
    log_file: str | None,
    limits: Any,
    startup: float,
    forked: bool = False,
) -> Any:
    """Run a job's step in this process (see :func:`run_step`); ``forked``: this process is the
    fork server's child for the job (its step line says so)."""
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
            ", in the fork server" if forked else "",
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


def _step_name(func: Callable[..., Any] | str) -> str:
    return func if isinstance(func, str) else f"{func.__module__}:{func.__qualname__}"


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
