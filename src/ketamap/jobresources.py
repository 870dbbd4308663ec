"""Job resources that grow with a job's input (SLURM requests them; the local profile ignores them).

A job's input size is measured in MB: directories (a fetched site dataset) are walked, because
Snakemake's input.size_mb counts a directory as its inode only; `files` keeps only the files a
step reads (e.g. "*.tsv" for the clinical reader of a PET site); the package code a rule lists as
input (`code`) is left out. Inputs not made yet (a dry run, whose plan then shows the floors)
count 0: Snakemake evaluates resources again when a job is ready and submits it with the size of
its real inputs.

    mem_mb  = floor + per_mb * total input MB + per_largest_mb * largest input file MB
    runtime = floor + per_gb * total input GB   (minutes)

Floors: a job's peak RSS is 0.2-0.3 GB on the small scenario (interpreter and imports; the
Snakemake process SLURM starts beside it adds about as much), 0.45-0.8 GB for iEEG, synth and the
pooled behaviour on the default one. Slopes (per rule, in the rules): readers that hold one file
at a time scale with the largest file (iEEG: MNE preloads a recording as float64 and filters a
copy, about 25x the EDF; PET streams frames, about 2x the largest NIfTI), readers of Parquet
tables with the total (about 20x: zstd-compressed columns decoded, then concatenated).
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

Resource = Callable[[Any, Any], int]


def _tree(path: str) -> list[tuple[str, int]]:
    """(relative path, size) of every file of a folder: the walk planning already made for the
    drift check (:func:`ketamap.integrity.walk_cached`), once per planning process."""
    from ketamap.integrity import walk_cached

    files, _ = walk_cached(path)
    return [(name, st.st_size) for name, st in files.items()]


def input_sizes(input: Any, files: Iterable[str] | None = None) -> list[int]:
    """Sizes in bytes of the files of a job's input data (directories walked, code left out).

    ``input`` is a Snakemake job's input (a named list of paths, with ``get``).
    """
    code = input.get("code", [])
    code_files = {code} if isinstance(code, str) else set(code)
    sizes: list[int] = []
    for path in input:
        if path in code_files or not os.path.exists(path):
            continue
        found = _tree(path) if os.path.isdir(path) else [(path, os.path.getsize(path))]
        sizes += [
            size
            for name, size in found
            if files is None
            or any(fnmatch.fnmatch(os.path.basename(name), pattern) for pattern in files)
        ]
    return sizes


def input_mb(input: Any, largest: bool = False, files: Iterable[str] | None = None) -> float:
    """Total size (with `largest`, the largest single file) of a job's input data, in MB."""
    sizes = input_sizes(input, files)
    return (max(sizes, default=0) if largest else sum(sizes)) / 2**20


def scaled_mem_mb(
    floor: float,
    per_mb: float = 0.0,
    per_largest_mb: float = 0.0,
    files: Iterable[str] | None = None,
) -> Resource:
    """mem_mb callable: floor + per_mb x input MB + per_largest_mb x largest input file MB."""

    def mem(wildcards: Any, input: Any) -> int:
        sizes = input_sizes(input, files)  # one walk of the inputs for both terms
        return math.ceil(
            floor + (per_mb * sum(sizes) + per_largest_mb * max(sizes, default=0)) / 2**20
        )

    return mem


def scaled_runtime(floor: float, per_gb: float, files: Iterable[str] | None = None) -> Resource:
    """runtime callable (minutes): floor + per_gb x input GB."""

    def minutes(wildcards: Any, input: Any) -> int:
        return math.ceil(floor + per_gb * input_mb(input, files=files) / 1024)

    return minutes


def _batch_sizes(datatype: str, wildcards: Any) -> list[int]:
    from ketamap.harmonize.scatter import sizes

    return sizes(f"resources/raw/{wildcards.site}", datatype, wildcards.batch)


def session_mem_mb(
    datatype: str, floor: float, per_mb: float = 0.0, per_largest_mb: float = 0.0
) -> Resource:
    """mem_mb callable of a session job: as :func:`scaled_mem_mb`, over the files of its sessions
    (and the site's top-level files) as the fetch manifest lists them, not the whole site (its
    sessions are read one after the other: the largest file sets ``per_largest_mb``'s share)."""

    def mem(wildcards: Any, input: Any) -> int:
        sizes = _batch_sizes(datatype, wildcards)
        return math.ceil(
            floor + (per_mb * sum(sizes) + per_largest_mb * max(sizes, default=0)) / 2**20
        )

    return mem


def session_runtime(datatype: str, floor: float, per_gb: float) -> Resource:
    """runtime callable (minutes) of a session job, from the size of its sessions' files."""

    def minutes(wildcards: Any, input: Any) -> int:
        return math.ceil(floor + per_gb * sum(_batch_sizes(datatype, wildcards)) / 2**30)

    return minutes
