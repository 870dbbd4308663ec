from ketamap.adapter import run_step
from ketamap.steps import harmonize_ieeg

run_step(
    snakemake,  # noqa: F821
    harmonize_ieeg,
    site=snakemake.params.site,  # noqa: F821
    raw=snakemake.input.raw,  # noqa: F821
    channels_out=snakemake.output.channels,  # noqa: F821
    responses_out=snakemake.output.responses,  # noqa: F821
    timecourses_out=snakemake.output.timecourses,  # noqa: F821
    synchrony_out=snakemake.output.synchrony,  # noqa: F821
    config=snakemake.params.config,  # noqa: F821
)
