"""Site data -> per-site tables: one subpackage per modality, the BIDS pieces they share
(:mod:`ketamap.harmonize.bids`), and the registry the workflow's rules are made from.

Each modality subpackage provides ``step(site, raw, key, options, atlas) -> {table: frame}``. The
registry names it by module path (a string), so planning the workflow imports no reader and each
rule's code input holds its own modality's package only (see :mod:`ketamap.codedeps`). A new
modality is one subpackage and one :data:`HARMONIZERS` line.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _scores(site: dict[str, Any]) -> bool:
    return "visits" in (site.get("reader") or {})


def _eyelid(site: dict[str, Any]) -> bool:
    return site["modality"] == "ieeg" and bool((site.get("reader") or {}).get("eyelid"))


# Named groups of sites, which decide the jobs and analyses a consortium gets.
SITE_GROUPS: dict[str, Callable[[dict[str, Any], dict[str, Any]], bool]] = {
    "all": lambda site, config: True,
    "scores": lambda site, config: _scores(site),
    "pet": lambda site, config: site["modality"] == "pet" and bool(config.get("atlas")),
    "ieeg": lambda site, config: site["modality"] == "ieeg",
    "mouse": lambda site, config: site["modality"] == "behaviour",
    "eyelid": lambda site, config: _eyelid(site),
    "behaviour": lambda site, config: site["modality"] == "behaviour" or _eyelid(site),
}


def site_groups(config: dict[str, Any]) -> dict[str, list[str]]:
    """The site ids of every group of :data:`SITE_GROUPS`, in config order."""
    return {
        name: [s["id"] for s in config["sites"] if member(s, config)]
        for name, member in SITE_GROUPS.items()
    }


@dataclass(frozen=True)
class Harmonizer:
    """One modality's harmonization: which sites, which module, which per-site tables.

    ``options``: the config section its reader reads besides the site entry (None: only the
    site entry). ``exact``: per-site tables pooled by a function (its dotted path, in a module
    light enough for the combine job) instead of concatenation. ``memory``/``runtime``: arguments of
    :func:`ketamap.jobresources.scaled_mem_mb` / ``scaled_runtime`` for its jobs.

    ``sessions``: the BIDS datatype folder (e.g. ``ieeg``) whose sessions are harmonized one job
    each, the module's ``session_step(site, raw, key, options, session) -> piece`` (with
    ``atlas``, also ``atlas=<atlas folder>``), then gathered per site by its
    ``step(..., pieces={session: piece})`` (see :mod:`ketamap.harmonize.scatter`); None: one job
    per site. ``session_memory`` / ``session_runtime``: the session jobs' resources, from the size
    of their sessions' files. ``session_cost``: (seconds, MB per second), one core's work on a
    session estimated as those seconds plus its files' MB at that rate, measured in one process
    (no start-up); with the config's ``jobs.session_batch_seconds`` it sizes the session jobs
    (:func:`scatter.batches`). ``session_threads``: its session step's work is parallel (the HFB
    envelope's channel blocks, on as many threads as ``scipy.fft``'s workers are set to), so a
    session job takes ``jobs.session_threads`` cores; the same bytes whatever the number.
    """

    modality: str
    module: str
    tables: tuple[str, ...]
    sites: str  # a group of SITE_GROUPS
    options: str | None = None
    atlas: bool = False
    exact: dict[str, str] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    sessions: str | None = None
    session_memory: dict[str, Any] = field(default_factory=dict)
    session_runtime: dict[str, Any] = field(default_factory=dict)
    session_cost: tuple[float, float] = (0.0, 1.0)
    session_threads: bool = False


# One core's work on a session, (seconds, MB per second): fitted to one process harmonizing each
# site's sessions of the default scenario on a 2-vCPU machine (PET: 117 sessions, 115 MB in 11 s;
# iEEG: 16 recordings, 224 MB in 30 s, EDF faster than BrainVision; benchmarks/ieeg_sessions.py's
# 16 MB EDF recordings take 1.3 s each; behaviour: 48 sessions of NWB, DeepLabCut and eyelid CSV,
# 46 MB in 4.7 s, least squares 0.05 s + MB / 59 MB/s), rounded up. They only size the session jobs (a machine
# twice as fast gets jobs of half the seconds), never what a table holds.
IEEG_SESSION_COST = (0.2, 10.0)
PET_SESSION_COST = (0.06, 40.0)
BEHAVIOUR_SESSION_COST = (0.1, 40.0)

HARMONIZERS: dict[str, Harmonizer] = {
    h.modality: h
    for h in (
        Harmonizer(
            "clinical",
            "ketamap.harmonize.clinical",
            ("subjects", "clinical_scores"),
            sites="all",
            memory={"floor": 1000, "per_mb": 20, "files": ["*.tsv"]},
            runtime={"floor": 10, "per_gb": 10, "files": ["*.tsv"]},
        ),
        Harmonizer(
            "pet",
            "ketamap.harmonize.pet",
            ("pet_regional", "pet_sessions"),
            sites="pet",
            options="pet",
            atlas=True,
            # the gather reads participants.tsv, the atlas, the folders and the pieces
            memory={"floor": 1000, "per_mb": 5, "files": ["*.tsv"]},
            runtime={"floor": 10, "per_gb": 10, "files": ["*.tsv"]},
            sessions="pet",
            # a session job streams its scans' frames: about 2x the largest NIfTI
            session_memory={"floor": 1000, "per_largest_mb": 2},
            session_runtime={"floor": 10, "per_gb": 10},
            session_cost=PET_SESSION_COST,
        ),
        Harmonizer(
            "ieeg",
            "ketamap.harmonize.ieeg",
            ("ieeg_channels", "ieeg_responses", "ieeg_timecourses", "ieeg_synchrony"),
            sites="ieeg",
            options="ieeg",
            exact={"ieeg_timecourses": "ketamap.harmonize.timecourses.combine_timecourses"},
            # the gather reads participants.tsv, the folders and the pieces
            memory={"floor": 1000, "per_mb": 5, "files": ["*.tsv"]},
            runtime={"floor": 10, "per_gb": 10, "files": ["*.tsv"]},
            sessions="ieeg",
            session_memory={"floor": 1000, "per_largest_mb": 25},
            session_runtime={"floor": 10, "per_gb": 30},
            session_cost=IEEG_SESSION_COST,
            # the HFB envelope's FFTs over a block of channels (signal.hfb_envelope)
            session_threads=True,
        ),
        Harmonizer(
            "behaviour",
            "ketamap.harmonize.behaviour",
            ("behaviour_puffs", "behaviour_timecourses", "reward_seeking", "reward_cues"),
            sites="behaviour",
            options="behaviour",
            # the gather reads participants.tsv, the folders and the pieces
            memory={"floor": 1000, "per_mb": 5, "files": ["*.tsv"]},
            runtime={"floor": 10, "per_gb": 10, "files": ["*.tsv"]},
            # human sessions keep the eyelid video in beh/, mouse sessions their NWB or
            # DeepLabCut files directly in the session folder
            sessions="beh|.",
            # a session job holds one tracking file's frames a few times over
            session_memory={"floor": 1000, "per_largest_mb": 10},
            session_runtime={"floor": 10, "per_gb": 20},
            session_cost=BEHAVIOUR_SESSION_COST,
        ),
    )
}


def table_sites(config: dict[str, Any]) -> dict[str, list[str]]:
    """Every per-site table the consortium has, with the sites that write it (none without sites)."""
    groups = site_groups(config)
    return {
        table: groups[h.sites]
        for h in HARMONIZERS.values()
        if groups[h.sites]
        for table in h.tables
    }


def exact_tables() -> dict[str, Harmonizer]:
    """Tables pooled by their own function rather than concatenated, with their harmonizer."""
    return {t: h for h in HARMONIZERS.values() for t in h.exact}


# The files of the shared atlas its reader lists and opens (ketamap.harmonize.pet.read_atlas):
# one label image and one label table at the top of the atlas folder.
ATLAS_IMAGES = ("*dseg.nii.gz", "*dseg.nii")
ATLAS_TABLES = ("*dseg.tsv",)


def atlas_scope(atlas: str | Path) -> list[str]:
    """What a job reads of the fetched atlas, relative to its folder: the top-level files matching
    :data:`ATLAS_IMAGES` or :data:`ATLAS_TABLES`, on disk or in the fetch manifest.

    A PET job verifies these only (every session job and gather reads the atlas): a file it opens
    that was altered, removed or added beside the ones it lists is still seen, and the rest of an
    atlas release (templates, documentation) is not hashed again by every job."""
    from fnmatch import fnmatchcase

    from ketamap.harmonize import scatter

    atlas = Path(atlas)
    names = {p.name for p in atlas.iterdir()} if atlas.is_dir() else set()
    names |= {f["path"] for f in scatter.listing(atlas) if "/" not in f["path"]}
    patterns = (*ATLAS_IMAGES, *ATLAS_TABLES)
    return sorted(n for n in names if any(fnmatchcase(n, p) for p in patterns))


def _verify_atlas(config: dict[str, Any], atlas: str | Path) -> None:
    from ketamap import integrity

    entry = {"id": "atlas", **(config.get("atlas") or {})}
    integrity.verify_fetched(entry, atlas, within=atlas_scope(atlas))


# What a site's data is pinned to: the keys of its config entry that its fetch records.
PIN_KEYS = ("registry", "path", "revision")


def site_pin(entry: dict[str, Any]) -> tuple[str, ...]:
    """The pin (:data:`PIN_KEYS`) a site entry of the config gives now, as its fetch records it
    (``path`` defaults to ``datasets/<site>``, the revision as text)."""
    return (
        str(entry["registry"]),
        str(entry.get("path") or f"datasets/{entry['id']}"),
        str(entry["revision"]),
    )


def with_pin(site: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A harmonize job's site entry (its params: what the reader reads) with the pin the config
    gives the site now (registry, path, revision), which the job checks the fetched data against.

    The pin is not a param: the jobs rerun on the fetched content, not on the name of a release."""
    from ketamap.config import site_by_id

    pinned = site_by_id(config, site["id"])
    return {**site, **{k: pinned[k] for k in PIN_KEYS if k in pinned}}


def run(
    modality: str,
    site: dict[str, Any],
    raw: str | Path,
    outputs: dict[str, str],
    config: dict[str, Any],
    atlas: str | Path | None = None,
    pieces: list[str] | None = None,
    sessions: list[str] | None = None,
) -> None:
    """Harmonize one site with its modality's step and write each table to ``outputs[table]``.

    ``sessions``: with ``fetch.per_session`` the fetch pulled the site's own files into ``raw``
    and these are the session folders the DVC storage plugin retrieved for the job; they are read
    together as one site folder (:func:`ketamap.harmonize.scatter.session_view`).

    The fetched data is verified first (every file's md5 against the fetch manifest, the pinned
    revision, no file added or removed, no symlink): altered bytes are never read. A gather
    (``pieces``: the piece files of the site's session jobs) verifies the site's top-level files;
    its session jobs verified their sessions."""
    from ketamap import integrity, schemas
    from ketamap.errors import SchemaError
    from ketamap.harmonize import scatter
    from ketamap.ids import load_key

    if sessions is not None:
        with scatter.session_view(raw, sessions) as view:
            return run(modality, site, view, outputs, config, atlas, pieces)
    h = HARMONIZERS[modality]
    if pieces is None:
        integrity.verify_fetched(site, raw)
    else:
        top = [f["path"] for f in scatter.listing(raw) if "/" not in f["path"]]
        integrity.verify_fetched(site, raw, within=top)
    if atlas:
        _verify_atlas(config, atlas)
    module = importlib.import_module(h.module)
    extra = {}
    if pieces is not None:
        extra["pieces"] = scatter.read_all_pieces(pieces, site=site["id"])
    tables = module.step(
        site,
        Path(raw),
        load_key(config),
        config[h.options] if h.options else None,
        Path(atlas) if atlas else None,
        **extra,
    )
    for table in h.tables:
        try:
            schemas.write_table(tables[table], table, outputs[table])
        except SchemaError as exc:
            # The table's check names the table, column and row; the job adds whose data it is.
            raise SchemaError(
                exc.problem,
                site=site["id"],
                file=exc.file,
                field=exc.field,
                expected=exc.expected,
                hint=exc.hint or "check the site's files for the value the row names",
            ) from None
    if pieces is not None:
        # piece files of earlier batches of this site (another jobs.session_batch_seconds, sessions
        # gone from a release), which this gather did not read: gone once its tables are written
        scatter.remove_stale_pieces(pieces)


def run_session(
    modality: str,
    site: dict[str, Any],
    raw: str | Path,
    batch: str,
    output: str,
    config: dict[str, Any],
    atlas: str | Path | None = None,
    sessions: list[str] | None = None,
    threads: int = 1,
) -> None:
    """One session job: verify the fetched files of the batch's sessions (and the site's top-level
    files, and the atlas files it reads), harmonize each session with its modality's
    ``session_step`` in this one process and write their pieces to one file. ``sessions``: the
    session folders retrieved for the job (``fetch.per_session``, see :func:`run`). ``threads``:
    the job's cores; for a modality whose work is parallel (``Harmonizer.session_threads``) they
    are set as ``scipy.fft``'s workers, which its step uses (the same bytes as one)."""
    from ketamap import integrity
    from ketamap.errors import SiteDataError
    from ketamap.harmonize import scatter
    from ketamap.ids import load_key

    if sessions is not None:
        with scatter.session_view(raw, sessions) as view:
            return run_session(modality, site, view, batch, output, config, atlas, threads=threads)

    h = HARMONIZERS[modality]
    assert h.sessions is not None
    names = scatter.batch_sessions(raw, h.sessions, batch)
    if not names:
        raise SiteDataError(
            f"no {modality} session of this job ({batch}) in the fetch manifest",
            site=site["id"],
            file=f"{raw}.fetch.json",
            expected="the sessions the workflow planned from the fetch (`make run` plans again)",
        )
    integrity.verify_fetched(site, raw, within=scatter.scope(raw, h.sessions, batch))
    if atlas:
        _verify_atlas(config, atlas)
    module = importlib.import_module(h.module)
    extra = {"atlas": Path(atlas) if atlas else None} if h.atlas else {}
    key = load_key(config)
    options = config[h.options] if h.options else None
    with contextlib.ExitStack() as stack:
        if threads > 1 and h.session_threads:
            from scipy import fft  # only here: the other modalities' jobs never import it

            stack.enter_context(fft.set_workers(threads))
        pieces = {s: module.session_step(site, Path(raw), key, options, s, **extra) for s in names}
    scatter.write_pieces(output, pieces)
    # Not the sessions' names: they hold the site's own participant labels, which never reach a
    # log's content (the log file is the job's own).
    log.info("site %s: %d session(s) harmonized", site["id"], len(names))


def combine(table: str, inputs: list[str], output: str | Path) -> None:
    """The consortium table from the per-site tables: concatenated and validated again as a
    whole, or pooled by the harmonizer's own function (:data:`Harmonizer.exact`)."""
    import pandas as pd

    from ketamap import schemas

    frames = [schemas.read_table(p, table) for p in sorted(inputs)]
    pooled = exact_tables().get(table)
    if pooled is not None:
        module, _, name = pooled.exact[table].rpartition(".")
        function = getattr(importlib.import_module(module), name)
        combined = function(frames)
    elif frames:
        combined = pd.concat(frames, ignore_index=True)
    else:
        combined = pd.DataFrame(columns=schemas.get_table(table).field_names)
    schemas.write_table(combined, table, output)
    log.info("%s: %d rows from %d sites", table, len(combined), len(frames))
