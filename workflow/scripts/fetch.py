from ketamap.adapter import run_step
from ketamap.steps import fetch_site

run_step(
    snakemake,  # noqa: F821
    fetch_site,
    site=snakemake.params.site,  # noqa: F821
    dest=snakemake.output.data,  # noqa: F821
    manifest=snakemake.output.manifest,  # noqa: F821
    options=snakemake.params.fetch,  # noqa: F821
)
