# Helpers shared by the rules; nothing here runs a step.
import mimetypes

from ketamap.config import check_config, demo_sites, resolve_demo_sites, site_by_id
from ketamap.ids import key_fingerprint

# mem_mb and runtime of most rules grow with the job's input size (see ketamap.jobresources).
from ketamap.jobresources import scaled_mem_mb, scaled_runtime
from ketamap.report import analysis_category, run_labels

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


# Options only the pooled analyses read, kept out of the harmonize jobs' params so that changing a
# margin or the bootstrap size reruns the analyses, never a harmonization.
POOLED_ONLY = {
    "ieeg": ("equivalence_margin_s",),
    "behaviour": ("equivalence_margin", "similarity_window_s", "bootstrap"),
}


def harmonize_config(modality):
    """What a harmonize job reads: the key, and its modality's section without pooled-only keys."""
    section = {
        k: v
        for k, v in config.get(modality, {}).items()
        if k not in POOLED_ONLY[modality]
    }
    return canonical(
        {"pseudonymization": config.get("pseudonymization", {}), modality: section}
    )


def pooled_pet_options(wildcards):
    """What one pooled PET analysis reads: only response prediction reads options (its question
    and the clinical response definition); the other analyses read nothing from the config.
    """
    if wildcards.name != "response_prediction":
        return {}
    return canonical(
        {
            "pet": {
                "response_prediction": config.get("pet", {}).get("response_prediction")
            },
            "clinical": {
                "response_fraction": config.get("clinical", {}).get("response_fraction")
            },
        }
    )


def harmonize_pet_config():
    """What the PET reader uses: the key and the quantification options (not the pooled ones)."""
    pet = {k: v for k, v in config.get("pet", {}).items() if k != "response_prediction"}
    return canonical(
        {"pseudonymization": config.get("pseudonymization", {}), "pet": pet}
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


# The report (make report): report() flags in the rules give every figure and pooled result a
# category per modality, the analysis as subcategory, a caption (workflow/report/<modality>.rst)
# and labels. Snakemake evaluates these functions only when it makes the report, so the labels
# (and the captions, which print them) carry the n and verdict read from the run's own results.
# The pooled results are embedded in the report as downloads, typed (not text/plain).
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")


def _with_wildcards(pattern, wildcards):
    return pattern.format(**dict(wildcards.items()))


def report_category(analysis):
    """Category of the analysis ``analysis`` names (a pattern such as "{analysis}")."""
    return lambda wildcards: analysis_category(_with_wildcards(analysis, wildcards))


def report_labels(shows, source):
    """Labels of a report item: what it shows, and the run's n and verdict read from ``source``
    (a path pattern with the job's wildcards) when the report is made."""
    return lambda wildcards: run_labels(shows, _with_wildcards(source, wildcards))


# Each behaviour figure: the analysis it belongs to, what it shows and where its n comes from.
BEHAVIOUR_FIGURE_REPORT = {
    "eyelid": (
        "behaviour.eyelid",
        "eyelid closure by species and drug",
        "results/tables/behaviour_timecourses.parquet",
    ),
    "reward": (
        "mouse.reward_seeking_after_train",
        "reward seeking around the train",
        "results/tables/reward_cues.parquet",
    ),
    "cross_species": (
        "cross_species.timing_signature",
        "cross-species panel",
        "results/pooled/cross_species.timing_signature.parquet",
    ),
}


def behaviour_figure_subcategory(wildcards):
    return BEHAVIOUR_FIGURE_REPORT[wildcards.kind][0]


def behaviour_figure_category(wildcards):
    return analysis_category(behaviour_figure_subcategory(wildcards))


def behaviour_figure_labels(wildcards):
    _, shows, source = BEHAVIOUR_FIGURE_REPORT[wildcards.kind]
    return run_labels(shows, source)
