from ketamap.adapter import run_step
from ketamap.steps import harmonize_pet

run_step(
    snakemake,  # noqa: F821
    harmonize_pet,
    site=snakemake.params.site,  # noqa: F821
    raw=snakemake.input.raw,  # noqa: F821
    atlas=snakemake.input.atlas,  # noqa: F821
    regional_out=snakemake.output.regional,  # noqa: F821
    sessions_out=snakemake.output.sessions,  # noqa: F821
    config=snakemake.params.config,  # noqa: F821
)
