# ketamap workflow: versioned site data -> harmonized Parquet tables -> pooled analyses.
# Table of contents only; the logic lives in the ketamap package (src/ketamap).
from snakemake.utils import min_version

from ketamap.config import validate_config

min_version("9.0")


configfile: "config/config.yaml"


# Checked against schemas/config.schema.yaml, the one place defaults are written, which fills them in.
validate_config(config)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/harmonize.smk"
include: "workflow/rules/pooled.smk"
include: "workflow/rules/manifest.smk"


# Local runs: the jobs' steps start from a process with the libraries imported (jobs.forkserver).
onstart:
    start_forkserver()


onsuccess:
    jobserver.stop()


onerror:
    jobserver.stop()


rule all:
    default_target: True
    input:
        all_targets(),


# Targets of the dvc.yaml stages (dvc repro): every consortium table; every pooled result and figure.
rule all_tables:
    input:
        table_outputs(),


rule all_pooled:
    input:
        pooled_outputs(),
        figure_outputs(),
        metrics_outputs(),
