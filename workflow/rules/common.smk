# Helpers shared by the rules; nothing here runs a step.
from ketamap.config import (
    analysis_options,
    check_config,
    demo_sites,
    resolve_demo_sites,
    site_by_id,
    yaml_digest,
)
from ketamap.ids import key_fingerprint

# mem_mb and runtime of most rules grow with the job's input size (see ketamap.jobresources).
from ketamap.jobresources import scaled_mem_mb, scaled_runtime

# The demo sites derived from the scenario are cached, so a parse imports no generator code.
resolve_demo_sites(config, cache=".snakemake/ketamap")
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


# What the fetch reads of a site entry: where the data is and which release. Editing a reader
# option, the species or the trial of a site re-harmonizes it but never downloads it again.
FETCH_KEYS = ("id", "registry", "path", "revision")


def fetch_entry(wildcards):
    site = site_by_id(config, wildcards.site)
    return canonical({k: site[k] for k in FETCH_KEYS if k in site})


def harmonize_config(modality):
    """What a harmonize job reads: the key, and its modality's section (pooled analyses' options
    live in `analyses`, so no margin or bootstrap edit reaches a harmonization)."""
    return canonical(
        {"pseudonymization": config["pseudonymization"], modality: config[modality]}
    )


def pooled_options(analysis):
    """What one pooled analysis reads: its `analyses` section and the keys ketamap.pooled.READS
    lists for it (a function of the wildcards when ``analysis`` holds a pattern)."""
    if "{" not in analysis:
        return canonical(analysis_options(config, analysis))
    return lambda wildcards: canonical(
        analysis_options(config, analysis.format(**wildcards))
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
