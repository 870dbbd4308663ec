# Helpers shared by the rules; nothing here runs a step.
from ketamap.config import check_config, demo_sites, resolve_demo_sites, site_by_id
from ketamap.ids import key_fingerprint

resolve_demo_sites(config)
check_config(config)

SITES = [site["id"] for site in config["sites"]]
CLINICAL_SITES = [s["id"] for s in config["sites"] if "visits" in s.get("reader", {})]
TABLES = ["subjects", "clinical_scores"]
POOLED = ["clinical.madrs_change"]


wildcard_constraints:
    site="|".join(SITES),
    table="|".join(TABLES),


def site_config(wildcards):
    return site_by_id(config, wildcards.site)


def registry_input(wildcards):
    """The demo registry is built by the workflow; a real registry is outside it."""
    if wildcards.site in demo_sites(config):
        return config["demo"]["registry"]
    return []


def table_outputs():
    return expand("results/tables/{table}.parquet", table=TABLES)


def pooled_outputs():
    return expand("results/pooled/{analysis}.parquet", analysis=POOLED)


def all_targets():
    return [*table_outputs(), *pooled_outputs(), "results/manifest.json"]
