from ketamap.adapter import run_step
from ketamap.steps import pooled_madrs_change

run_step(
    snakemake,  # noqa: F821
    pooled_madrs_change,
    subjects=snakemake.input.subjects,  # noqa: F821
    scores=snakemake.input.scores,  # noqa: F821
    output=snakemake.output.result,  # noqa: F821
    metrics=snakemake.output.metrics,  # noqa: F821
    options=snakemake.params.options,  # noqa: F821
)
