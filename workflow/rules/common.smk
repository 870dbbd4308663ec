# Helpers shared by the rules; nothing here runs a step.
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
TABLE_SITES = {"subjects": SITES, "clinical_scores": SITES}
if PET_SITES:
    TABLE_SITES |= {"pet_regional": PET_SITES, "pet_sessions": PET_SITES}
TABLES = list(TABLE_SITES)
POOLED = ["clinical.madrs_change"]
if PET_SITES:
    POOLED += [
        "pet.baseline_trd_vs_hc",
        "pet.ketamine_x_time",
        "pet.change_vs_improvement",
        "pet.response_prediction",
    ]


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
    return expand("results/tables/{table}.parquet", table=TABLES)


def pooled_outputs():
    return expand("results/pooled/{analysis}.parquet", analysis=POOLED)


def figure_outputs():
    if not PET_SITES:
        return []
    return [
        *expand("results/figures/{analysis}.png", analysis=POOLED[1:]),
        "results/figures/pet.change_vs_improvement.scatter.png",
    ]


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
