"""What each rule's job hands to its step: the one line of every rule's ``run:`` block.

A rule's ``run:`` block is ``jobs.run("<kind>", input, output, params, wildcards, threads, log,
config)``. :data:`JOBS` maps each kind to its step (``"module:function"``, imported only where the
step runs) and the step's arguments, taken from the job; :func:`ketamap.adapter.run_job` runs the
step in a process of its own (the fork server's child, or a new one). This runs in Snakemake's
process, one thread per job: it imports nothing heavy and only reads the job's fields.

Kept here rather than in the rules: a ``run:`` block of more than a call is what Snakemake's
linter asks to move out of the workflow, and these mappings are code the tests import.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ketamap.adapter import run_job, session_folders

Job = SimpleNamespace  # input, output, params, wildcards, threads, config: Snakemake's, as given


def _fetch(job: Job) -> tuple[str, dict[str, Any]]:
    """A site's dataset (or the atlas): pull at the pinned revision, verify, record."""
    return "ketamap.registry:fetch_step", {
        "site": job.params.site,
        "dest": job.output.data,
        "manifest": job.output.manifest,
        "content": job.output.content,
        # Read from the config, not params: how this machine reaches the remotes (keyfile,
        # timeout) changes nothing in the data; editing it must not rerun the fetch and all after.
        "options": job.config.get("fetch", {}),
        # False (fetch.per_session): the site's own files only; the atlas is always pulled whole
        "sessions": job.params.get("sessions", True),
        # fetch.per_session: the storage plugin's index, planning's answers for the sessions
        "index": job.output.get("index"),
    }


def _site_fields(job: Job) -> dict[str, Any]:
    """What a site's harmonize jobs (session and gather) both hand their step."""
    from ketamap.harmonize import with_pin

    return {
        "modality": job.params.modality,
        "site": with_pin(job.params.site, job.config),
        "raw": job.input.raw,
        "atlas": job.input.get("atlas"),
        # fetch.per_session: the session folders the DVC storage plugin retrieved for this job
        "sessions": session_folders(job.input),
        "config": job.params.config,
    }


def _harmonize_session(job: Job) -> tuple[str, dict[str, Any]]:
    """A batch of session folders of a site -> their pieces, gathered by the site's job."""
    return "ketamap.harmonize:run_session", {
        **_site_fields(job),
        "batch": job.wildcards.batch,
        "output": job.output.piece,
        "threads": job.threads,
    }


def _harmonize(job: Job) -> tuple[str, dict[str, Any]]:
    """One site's data (or its session pieces: a gather) -> its per-site tables."""
    return "ketamap.harmonize:run", {
        **_site_fields(job),
        "outputs": dict(job.output.items()),
        # a gather: the piece files of the site's session jobs
        "pieces": list(job.input.pieces) if job.params.sessions else None,
    }


def _combine(job: Job) -> tuple[str, dict[str, Any]]:
    """The per-site tables -> one consortium table."""
    return "ketamap.harmonize:combine", {
        "table": job.params.table,
        "inputs": list(job.input.tables),
        "output": job.output[0],
    }


def _data_inputs(job: Job) -> dict[str, Any]:
    """The job's named inputs but its code files (which only trigger reruns)."""
    return {k: v for k, v in job.input.items() if k != "code"}


def _pooled(job: Job) -> tuple[str, dict[str, Any]]:
    """One analysis of ketamap.pooled.ANALYSES on the consortium tables."""
    return "ketamap.pooled:run", {
        "analysis": job.params.analysis,
        "inputs": _data_inputs(job),
        "output": job.output.result,
        "figure": job.output.get("figure"),
        "metrics": job.output.get("metrics"),
        "options": job.params.options,
    }


def _figure(job: Job) -> tuple[str, dict[str, Any]]:
    """One figure of ketamap.pooled.FIGURES from tables and results."""
    return "ketamap.pooled:draw", {
        "name": job.wildcards.figure,
        "inputs": _data_inputs(job),
        "output": job.output[0],
    }


def _manifest(job: Job) -> tuple[str, dict[str, Any]]:
    """What produced the results (the step imports pandas: named, never imported here)."""
    return "ketamap.manifest:write_run_manifest", {
        "config": job.params.config,
        "fetch_manifests": list(job.input.fetched),
        "outputs": list(job.input.outputs),
        "path": job.output[0],
    }


JOBS: dict[str, Callable[[Job], tuple[str, dict[str, Any]]]] = {
    "fetch": _fetch,
    "harmonize_session": _harmonize_session,
    "harmonize": _harmonize,
    "combine": _combine,
    "pooled": _pooled,
    "figure": _figure,
    "manifest": _manifest,
}


def run(
    kind: str,
    input: Any,
    output: Any,
    params: Any,
    wildcards: Any,
    threads: int,
    log: Any,
    config: dict[str, Any],
) -> None:
    """Run the step of a job of ``kind`` (:data:`JOBS`); raise
    :class:`~ketamap.adapter.StepError` when it fails."""
    job = Job(
        input=input,
        output=output,
        params=params,
        wildcards=wildcards,
        threads=threads,
        config=config,
    )
    step, kwargs = JOBS[kind](job)
    run_job(step, log, config, **kwargs)
