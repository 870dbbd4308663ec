from ketamap.adapter import run_step
from ketamap.steps import pooled_pet

run_step(
    snakemake,  # noqa: F821
    pooled_pet,
    analysis=f"pet.{snakemake.wildcards.name}",  # noqa: F821
    regional=snakemake.input.regional,  # noqa: F821
    subjects=snakemake.input.subjects,  # noqa: F821
    scores=snakemake.input.scores,  # noqa: F821
    output=snakemake.output.result,  # noqa: F821
    figure=snakemake.output.figure,  # noqa: F821
    options=snakemake.params.options,  # noqa: F821
)
