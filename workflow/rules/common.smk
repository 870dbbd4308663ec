# Helpers shared by the rules; nothing here runs a step. What exists (tables, analyses, figures)
# comes from the registries: ketamap.harmonize.HARMONIZERS and ketamap.pooled.ANALYSES / FIGURES.
import mimetypes
import re
import shutil
import sys
from pathlib import Path

from ketamap.codedeps import step_code
from ketamap.config import (
    check_config,
    demo_sites,
    site_by_id,
    yaml_digest,
)
from ketamap.demo import resolve_demo_sites
from ketamap import jobs
from ketamap.harmonize import (
    HARMONIZERS,
    exact_tables,
    site_groups,
    site_pin,
    table_sites,
)
from ketamap.ids import key_fingerprint
from ketamap.integrity import refresh_fetch_stamp
from ketamap import jobserver

# mem_mb and runtime of most rules grow with the job's input size (see ketamap.jobresources).
from ketamap.jobresources import (
    scaled_mem_mb,
    scaled_runtime,
    session_mem_mb,
    session_runtime,
)
from ketamap.harmonize.scatter import BATCH_ID
from ketamap.harmonize import scatter
from ketamap.report import analysis_category, run_labels
from ketamap.pooled import (
    ANALYSES,
    FIGURES,
    analysis_options,
    n_source,
    planned,
    planned_figures,
    result_path,
    table_path,
)

# The demo sites derived from the scenario are cached, so a parse imports no generator code.
resolve_demo_sites(config, cache=".snakemake/ketamap")
check_config(config)

SITES = [site["id"] for site in config["sites"]]
GROUPS = site_groups(config)
TABLE_SITES = table_sites(config)  # per-site table -> the sites that write it
TABLES = [
    t for t in TABLE_SITES if t not in exact_tables()
]  # combined by concatenation
EXACT = [t for t in TABLE_SITES if t in exact_tables()]  # pooled by their own function
POOLED = planned(GROUPS)
FIGURES_PLANNED = planned_figures(GROUPS)


# Fetched data that changed on disk (a file altered, added or deleted, the folder removed, another
# revision pinned) is fetched again: its stamp, an input of the fetch, is rewritten (see
# ketamap.integrity.refresh_fetch_stamp). Only the main process checks; cluster jobs never do.
def check_fetched():
    entries = [dict(site) for site in config["sites"]]
    if config.get("atlas"):
        entries.append({"id": "atlas", "path": "datasets/atlas", **config["atlas"]})
    for entry in entries:
        why = refresh_fetch_stamp(entry, f"resources/raw/{entry['id']}")
        if why:
            print(
                f"ketamap: {entry['id']}: {why}; it is fetched again", file=sys.stderr
            )


# fetch.per_session: the fetch pulls each site's own files (participants.tsv, ...) and lists the
# rest; every session job pulls its own session folders through the DVC storage plugin
# (packages/snakemake-storage-plugin-dvc), one tagged provider per site holding the site's
# registry and pinned revision. The revision is a setting, not part of the query (the session's
# path), so a release whose session is identical changes no job's inputs.
PER_SESSION = config["fetch"]["per_session"]
STORAGE_CACHE = Path("resources/dvc-storage-cache").resolve()


def storage_tag(site):
    return f"ketamap_{site}"


def storage_index(site):
    """The plugin's index of a site's dataset, written by its fetch: the session inputs are
    planned from it, without opening the site's registry (a git clone for a remote one).
    """
    return f"resources/raw/{site}.dvc-index.json"


if PER_SESSION:
    # only here: every job's parse would pay for the registry module's import otherwise
    from ketamap.registry import resolve_url

    for _site in config["sites"]:
        workflow.storage_registry.register_storage(
            provider="dvc",
            tag=storage_tag(_site["id"]),
            registry=resolve_url(_site["registry"], Path.cwd()),
            revision=str(_site["revision"]),
            cache=str(STORAGE_CACHE),
            index=str(Path(storage_index(_site["id"])).resolve()),
            timeout=float(config["fetch"]["timeout"]),
            # the same options as the fetch's (keyfile, endpointurl, ...), every registry
            remote_options=dict(config["fetch"]["remote_options"] or {}),
        )


def clear_session_copies():
    """The local copies of retrieved sessions live for one run: each run's jobs get theirs anew
    from the plugin's cache, which hashes every copy it makes, so a copy altered on disk since an
    earlier run is never read."""
    for site in SITES:
        shutil.rmtree(
            workflow.storage_settings.local_storage_prefix / storage_tag(site),
            ignore_errors=True,
        )


if workflow.is_main_process:
    check_fetched()
    if PER_SESSION:
        clear_session_copies()


# A site is any valid site id but `atlas` (the schema's pattern; the atlas' fetch is its own rule).
# Not the list of the configured ids: Snakemake copies a constraint into every pattern and matches
# it for every job, and a 1,500-way alternation made planning 2x slower (benchmarks/dag_scale.py).
wildcard_constraints:
    site=r"(?!atlas(?![a-z0-9_]))[a-z][a-z0-9_]*",
    table="|".join(TABLES),


# Params are compared as their repr when Snakemake decides what to rerun, and a dict's repr follows
# its insertion order, i.e. the order of the keys in config.yaml. Every params value goes through
# canonical(), so the same config with its keys in another order reruns nothing.
def canonical(value):
    """``value`` with every dict's keys sorted (recursively); lists keep their order."""
    if isinstance(value, dict):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def site_config(wildcards):
    return canonical(site_by_id(config, wildcards.site))


# Where a site's data comes from (registry, path, revision) is the fetch's business: the jobs that
# read the fetched data take its content instead (params content), so a new release reruns the
# sessions and sites whose bytes changed and nothing else. They still check the fetched data
# against the pin, read from the config when they run (ketamap.harmonize.with_pin).
def reader_config(wildcards):
    site = site_by_id(config, wildcards.site)
    return canonical(
        {k: v for k, v in site.items() if k == "id" or k not in FETCH_KEYS}
    )


# What the fetch reads of a site entry: where the data is and which release. Editing a reader
# option, the species or the trial of a site re-harmonizes it but never downloads it again.
FETCH_KEYS = ("id", "registry", "path", "revision")


def fetch_entry(wildcards):
    site = site_by_id(config, wildcards.site)
    return canonical({k: site[k] for k in FETCH_KEYS if k in site})


def harmonize_config(section):
    """What a harmonize job reads: the key, and its modality's section if its reader has one
    (pooled analyses' options live in `analyses`, so no margin edit reaches a harmonization).
    """
    slice_ = {"pseudonymization": config["pseudonymization"]}
    if section:
        slice_[section] = config[section]
    return canonical(slice_)


def pooled_options(analysis):
    """What one pooled analysis reads: its `analyses` section and the keys its registry entry
    lists (ketamap.pooled.Analysis.reads)."""
    return canonical(analysis_options(config, analysis))


def fetched_content(*datasets):
    """Params: the content ids of the fetched datasets a harmonize job reads (patterns such as
    "{site}"), read from resources/raw/<dataset>.content when the job is planned.

    The fetch is a checkpoint: Snakemake plans a job again when a fetch it reads has finished,
    and this is read again then. A fetch that brought other bytes changes the param and reruns
    the job (and, by its outputs, what follows); a refetch of the same bytes changes nothing, and
    since every input from the fetch is ancient() nothing after the fetch is planned at all.
    (A content file as a plain input would do the first, but Snakemake would keep the jobs two
    steps after a refetch planned: only a checkpoint's direct dependents are planned again.)
    """

    def content(wildcards):
        ids = {}
        for dataset in datasets:
            name = dataset.format(**wildcards)
            path = Path(f"resources/raw/{name}.content")
            ids[name] = path.read_text().strip() if path.is_file() else ""
        return ids

    return content


def session_pieces(h):
    """Input of a per-session modality's gather: the piece file of every session job (batch) of
    the site's sessions its fetch manifest lists ([] before the fetch; planned again when it has
    finished)."""
    if not h.sessions:
        return []
    seconds = config["jobs"]["session_batch_seconds"]

    def pieces(wildcards):
        found = scatter.batches(
            f"resources/raw/{wildcards.site}", h.sessions, seconds, h.session_cost
        )
        return [
            f"resources/pieces/{wildcards.site}/{h.modality}/{b}.zip" for b in found
        ]

    return pieces


def session_storage(h, batch=True):
    """fetch.per_session: the session folders a job reads, as inputs of the site's storage
    provider (paths inside the registry): a session job's own (``batch``) or every session of its
    site (the gather, which checks them together). [] with whole-site fetches."""
    if not PER_SESSION:
        return []

    def sessions(wildcards):
        raw = f"resources/raw/{wildcards.site}"
        pin = site_pin(site_by_id(config, wildcards.site))
        root = pin[1]  # the site's folder in its registry
        if scatter.fetched_pin(raw) != pin:
            # Not fetched, or fetched at another pin (a new release): the fetch runs, and the
            # sessions are planned from its listing once it has ended, as for any checkpoint
            # (the provider's registry and revision are the new ones; the listing is the old).
            checkpoints.fetch.get(site=wildcards.site)
        if batch:
            found = scatter.batch_sessions(raw, h.sessions, wildcards.batch)
        else:  # the batches cover every session once
            found = scatter.sessions(raw, h.sessions)
        provider = getattr(storage, storage_tag(wildcards.site))
        return [
            provider(f"{root}/{'/'.join(scatter.session_folder(s))}") for s in found
        ]

    return sessions


FORKSERVER_LOG = ".snakemake/log/ketamap-forkserver.log"
FORKSERVER_DECIDED = False  # onstart has kept or stopped it


def forkserver_wanted():
    """A local run (Snakemake's local executor, this process scheduling its own jobs, not a dry
    run, not --touch, hooks on) with jobs.forkserver: its jobs' steps run in the fork server's
    children (ketamap.jobserver). Cluster jobs never see it."""
    from snakemake_interface_executor_plugins.settings import ExecMode

    settings = (
        workflow.execution_settings
    )  # None outside an execution (report, unlock, ...)
    return bool(
        config["jobs"]["forkserver"]
        and settings is not None
        and not settings.no_hooks
        and workflow.local_exec
        and workflow.exec_mode == ExecMode.DEFAULT
        and not workflow.dryrun
        and not workflow.touch
    )


def forkserver_while_planning(wildcards):
    """Input function of the fetch rules, no files: the first time the planning of a local run
    (forkserver_wanted) gets there, start the fork server, so that its imports (2-4 s of one core)
    run while Snakemake plans on the other, and the first jobs find it listening. onstart stops it
    again when the run has too few jobs for it (start_forkserver), and planning after a
    checkpoint never starts it again."""
    if not FORKSERVER_DECIDED and forkserver_wanted():
        jobserver.start(FORKSERVER_LOG)
    return []


def start_forkserver():
    """onstart: keep (or start) the fork server when the run has enough jobs to gain from it,
    stop it otherwise."""
    global FORKSERVER_DECIDED
    FORKSERVER_DECIDED = True
    if workflow.local_exec and not workflow.use_threads:
        print(
            "ketamap: each job starts a Snakemake process of its own; run with "
            "--force-use-threads (workflow/profiles/default sets it) to save 1-3 s a job",
            file=sys.stderr,
        )
    if not forkserver_wanted():
        jobserver.stop()
        return
    # The server's imports cost one core a few seconds: worth it from a few jobs on. A fetch (a
    # checkpoint) to run counts as many: the jobs after it are planned when it has finished.
    try:
        needrun = list(workflow.dag.needrun_jobs())
        steps = sum(1 for job in needrun if job.is_run)
        if any(job.rule.is_checkpoint for job in needrun):
            steps = max(steps, jobserver.MIN_JOBS)
    except Exception:  # Snakemake's DAG API moved: start it
        steps = jobserver.MIN_JOBS
    if steps >= jobserver.MIN_JOBS:
        jobserver.start(FORKSERVER_LOG)
    else:
        jobserver.stop()


def session_threads(h):
    """A session job's threads: jobs.session_threads if its modality's work is parallel
    (Harmonizer.session_threads: iEEG's HFB envelope, channel blocks on that many threads), else 1.
    Snakemake caps it at --cores (and --max-threads); the tables are the same bytes whatever it is.
    """
    return config["jobs"]["session_threads"] if h.session_threads else 1


def session_index():
    """fetch.per_session: the plugin's index the session inputs are planned from, as an input of
    the jobs reading them (ancient: a refetch of the same bytes reruns nothing). Requested, so a
    project fetched whole before per_session was switched on fetches again and gets one.
    """
    return {"dvc_index": ancient(storage_index("{site}"))} if PER_SESSION else {}


def session_content(h):
    """Param of a session job: the md5 listing of its sessions' fetched files (and the site's
    top-level files), so only a change there reruns it."""
    return lambda wildcards: scatter.content(
        f"resources/raw/{wildcards.site}", h.sessions, wildcards.batch
    )


def atlas_entry(wildcards):
    atlas = {"id": "atlas", "path": "datasets/atlas", **config["atlas"]}
    return canonical({k: atlas[k] for k in FETCH_KEYS if k in atlas})


def registry_input(wildcards):
    """The demo registry is built by the workflow; a real registry is outside it."""
    if wildcards.site in demo_sites(config):
        return config["demo"]["registry"]
    return []


def atlas_registry_input(wildcards):
    demo = config.get("demo")
    if demo and config["atlas"]["registry"] == demo["registry"]:
        return demo["registry"]
    return []


def table_outputs():
    return [table_path(t) for t in TABLES + EXACT]


def pooled_outputs():
    return [result_path(a) for a in POOLED]


def figure_outputs():
    return [f"results/figures/{a}.png" for a in POOLED if ANALYSES[a].figure] + [
        f"results/figures/{f}.png" for f in FIGURES_PLANNED
    ]


def metrics_outputs():
    return sorted(
        {
            f"results/metrics/{ANALYSES[a].module.rsplit('.', 1)[-1]}.json"
            for a in POOLED
            if ANALYSES[a].metrics
        }
    )


def fetch_manifests():
    return expand("resources/raw/{site}.fetch.json", site=SITES) + (
        ["resources/raw/atlas.fetch.json"] if GROUPS["pet"] else []
    )


def all_targets():
    return [
        *table_outputs(),
        *pooled_outputs(),
        *figure_outputs(),
        "results/manifest.json",
    ]


def analysis_inputs(analysis):
    """The consortium tables one analysis reads (optional ones when their sites are there)."""
    spec = ANALYSES[analysis]
    tables = list(spec.tables) + [t for t, g in spec.optional.items() if GROUPS[g]]
    return {t: table_path(t) for t in tables}


def figure_inputs(wildcards):
    """The tables and results one figure is drawn from."""
    spec = FIGURES[wildcards.figure]
    sources = dict(spec.inputs)
    sources |= {k: v for k, (v, g) in spec.optional.items() if GROUPS[g]}
    return {
        arg: table_path(what) if kind == "table" else result_path(what)
        for arg, (kind, _, what) in ((a, s.partition(":")) for a, s in sources.items())
    }


# The report (make report): report() flags in the rules give every figure and pooled result a
# category per modality, the analysis as subcategory, a caption (workflow/report/<module>.rst)
# and labels. Snakemake evaluates these functions only when it makes the report, so the labels
# (and the captions, which print them) carry the n and verdict read from the run's own results.
# The pooled results are embedded in the report as downloads, typed (not text/plain).
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")


def caption(module):
    """The caption file of a pooled module's analyses and figures (relative to the rules)."""
    return f"../report/{module.rsplit('.', 1)[-1]}.rst"


def _with_wildcards(pattern, wildcards):
    return pattern.format(**dict(wildcards.items()))


def report_category(analysis):
    """Category of the analysis ``analysis`` names (a pattern such as "{analysis}")."""
    return lambda wildcards: analysis_category(_with_wildcards(analysis, wildcards))


def report_labels(shows, source):
    """Labels of a report item: what it shows, and the run's n and verdict read from ``source``
    (a path pattern with the job's wildcards) when the report is made."""
    return lambda wildcards: run_labels(shows, _with_wildcards(source, wildcards))


def figure_subcategory(wildcards):
    return FIGURES[wildcards.figure].about


def figure_category(wildcards):
    return analysis_category(figure_subcategory(wildcards))


def figure_labels(wildcards):
    return run_labels(FIGURES[wildcards.figure].shows, n_source(wildcards.figure))
