from ketamap.adapter import run_step
from ketamap.steps import pooled_ieeg

run_step(
    snakemake,  # noqa: F821
    pooled_ieeg,
    analysis=f"ieeg.{snakemake.wildcards.name}",  # noqa: F821
    responses=snakemake.input.responses,  # noqa: F821
    synchrony=snakemake.input.synchrony,  # noqa: F821
    output=snakemake.output.result,  # noqa: F821
    figure=snakemake.output.figure,  # noqa: F821
    options=snakemake.params.options,  # noqa: F821
)
