# Helpers shared by the rules; nothing here runs a step.
import fnmatch
import math
import os

from ketamap.config import check_config, demo_sites, resolve_demo_sites, site_by_id
from ketamap.ids import key_fingerprint

resolve_demo_sites(config)
check_config(config)

SITES = [site["id"] for site in config["sites"]]
PET_SITES = (
    [s["id"] for s in config["sites"] if s["modality"] == "pet"]
    if config.get("atlas")
    else []
)
IEEG_SITES = [s["id"] for s in config["sites"] if s["modality"] == "ieeg"]
MOUSE_SITES = [s["id"] for s in config["sites"] if s["modality"] == "behaviour"]
EYELID_SITES = [
    s["id"]
    for s in config["sites"]
    if s["modality"] == "ieeg" and s.get("reader", {}).get("eyelid")
]
BEHAVIOUR_SITES = [s for s in SITES if s in MOUSE_SITES or s in EYELID_SITES]
SCORE_SITES = [s["id"] for s in config["sites"] if "visits" in s.get("reader", {})]
TABLE_SITES = {"subjects": SITES, "clinical_scores": SITES}
if PET_SITES:
    TABLE_SITES |= {"pet_regional": PET_SITES, "pet_sessions": PET_SITES}
if IEEG_SITES:
    TABLE_SITES |= {
        "ieeg_channels": IEEG_SITES,
        "ieeg_responses": IEEG_SITES,
        "ieeg_synchrony": IEEG_SITES,
    }
if BEHAVIOUR_SITES:
    TABLE_SITES |= {
        t: BEHAVIOUR_SITES
        for t in (
            "behaviour_puffs",
            "behaviour_timecourses",
            "reward_seeking",
            "reward_cues",
        )
    }
TABLES = list(TABLE_SITES)
POOLED = ["clinical.madrs_change"] if SCORE_SITES else []
PET_POOLED = [
    "pet.baseline_trd_vs_hc",
    "pet.ketamine_x_time",
    "pet.change_vs_improvement",
    "pet.response_prediction",
]
IEEG_POOLED = ["ieeg.slow_phase_duration", "ieeg.fast_phase_latency", "ieeg.synchrony"]
if PET_SITES:
    POOLED += PET_POOLED
if IEEG_SITES:
    POOLED += IEEG_POOLED
BEHAVIOUR_POOLED = (
    ["behaviour.reflex_blink", "behaviour.sustained_closure"] if BEHAVIOUR_SITES else []
)
if MOUSE_SITES:
    BEHAVIOUR_POOLED.append("mouse.reward_seeking_after_train")
if MOUSE_SITES and EYELID_SITES:
    BEHAVIOUR_POOLED.append("cross_species.timing_signature")
POOLED += BEHAVIOUR_POOLED
BEHAVIOUR_FIGURES = (["eyelid"] if BEHAVIOUR_SITES else []) + (
    ["reward"] if MOUSE_SITES else []
)
if "cross_species.timing_signature" in BEHAVIOUR_POOLED:
    BEHAVIOUR_FIGURES.append("cross_species")


wildcard_constraints:
    site="|".join(SITES),
    table="|".join(TABLES),


def code(*modules):
    """Package modules (and schema files) a rule's results depend on: editing them reruns the rule."""
    return [
        m if m.startswith("schemas/") else f"src/ketamap/{m}"
        for m in ("schemas.py", *modules)
    ]


def site_config(wildcards):
    return site_by_id(config, wildcards.site)


def harmonize_pet_config():
    """What the PET reader uses: the key and the quantification options (not the pooled ones)."""
    pet = {k: v for k, v in config.get("pet", {}).items() if k != "response_prediction"}
    return {"pseudonymization": config.get("pseudonymization", {}), "pet": pet}


def atlas_entry(wildcards):
    return {"id": "atlas", "path": "datasets/atlas", **config["atlas"]}


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


def table_inputs(wildcards):
    return expand(
        "results/sites/{site}/{table}.parquet",
        site=TABLE_SITES[wildcards.table],
        table=wildcards.table,
    )


def table_outputs():
    extra = ["ieeg_timecourses"] if IEEG_SITES else []
    return expand("results/tables/{table}.parquet", table=TABLES + extra)


def pooled_outputs():
    return expand("results/pooled/{analysis}.parquet", analysis=POOLED)


def figure_outputs():
    figures = []
    if PET_SITES:
        figures += expand("results/figures/{analysis}.png", analysis=PET_POOLED)
        figures.append("results/figures/pet.change_vs_improvement.scatter.png")
        figures.append("results/figures/pet.batches.png")
    if IEEG_SITES:
        figures += expand("results/figures/{analysis}.png", analysis=IEEG_POOLED)
        figures.append("results/figures/ieeg.timecourses.png")
    figures += expand("results/figures/{analysis}.png", analysis=BEHAVIOUR_POOLED)
    figures += expand("results/figures/behaviour.{kind}.png", kind=BEHAVIOUR_FIGURES)
    return figures


def metrics_outputs():
    return ["results/metrics/clinical.json"] if SCORE_SITES else []


def fetch_manifests():
    return expand("resources/raw/{site}.fetch.json", site=SITES) + (
        ["resources/raw/atlas.fetch.json"] if PET_SITES else []
    )


def all_targets():
    return [
        *table_outputs(),
        *pooled_outputs(),
        *figure_outputs(),
        "results/manifest.json",
    ]


def ieeg_responses_input(wildcards):
    """The cross-species analysis also reads the human iEEG responses, when there are any."""
    if wildcards.analysis.startswith("cross_species.") and IEEG_SITES:
        return ["results/tables/ieeg_responses.parquet"]
    return []


def behaviour_figure_inputs(wildcards):
    if wildcards.kind == "eyelid":
        return {"timecourses": "results/tables/behaviour_timecourses.parquet"}
    if wildcards.kind == "reward":
        return {"cues": "results/tables/reward_cues.parquet"}
    inputs = {
        "timecourses": "results/tables/behaviour_timecourses.parquet",
        "signature": "results/pooled/cross_species.timing_signature.parquet",
    }
    if IEEG_SITES:
        inputs["ieeg_timecourses"] = "results/tables/ieeg_timecourses.parquet"
    return inputs


# Resources that grow with a job's input (SLURM requests them; the local profile ignores them).
# A job's input size is measured in MB: directories (a fetched site dataset) are walked, because
# Snakemake's input.size_mb counts a directory as its inode only; `files` keeps only the files a
# step reads (e.g. "*.tsv" for the clinical reader of a PET site); the package code a rule lists as
# input (`code`) is left out. Inputs not made yet (a dry run, whose plan then shows the floors)
# count 0: Snakemake evaluates resources again when a job is ready and submits it with the size of
# its real inputs.
#   mem_mb  = floor + per_mb * total input MB + per_largest_mb * largest input file MB
#   runtime = floor + per_gb * total input GB   (minutes)
# Floors: a job's peak RSS is 0.2-0.3 GB on the small scenario (interpreter and imports; the
# Snakemake process SLURM starts beside it adds about as much), 0.45-0.8 GB for iEEG, synth and the
# pooled behaviour on the default one. Slopes (per rule, in the rules): readers that hold one file
# at a time scale with the largest file (iEEG: MNE preloads a recording as float64 and filters a
# copy, about 25x the EDF; PET streams frames, about 2x the largest NIfTI), readers of Parquet
# tables with the total (about 20x: zstd-compressed columns decoded, then concatenated).
def input_mb(input, largest=False, files=None):
    """Total size (with `largest`, the largest single file) of a job's input data, in MB."""
    code = input.get("code", [])
    code_files = {code} if isinstance(code, str) else set(code)
    sizes = []
    for path in input:
        if path in code_files or not os.path.exists(path):
            continue
        found = (
            [os.path.join(root, f) for root, _, names in os.walk(path) for f in names]
            if os.path.isdir(path)
            else [path]
        )
        sizes += [
            os.path.getsize(f)
            for f in found
            if files is None
            or any(fnmatch.fnmatch(os.path.basename(f), pattern) for pattern in files)
        ]
    return (max(sizes, default=0) if largest else sum(sizes)) / 2**20


def scaled_mem_mb(floor, per_mb=0.0, per_largest_mb=0.0, files=None):
    """mem_mb callable: floor + per_mb x input MB + per_largest_mb x largest input file MB."""

    def mem(wildcards, input):
        return math.ceil(
            floor
            + per_mb * input_mb(input, files=files)
            + per_largest_mb * input_mb(input, largest=True, files=files)
        )

    return mem


def scaled_runtime(floor, per_gb, files=None):
    """runtime callable (minutes): floor + per_gb x input GB."""

    def minutes(wildcards, input):
        return math.ceil(floor + per_gb * input_mb(input, files=files) / 1024)

    return minutes
