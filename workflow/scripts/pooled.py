# Every pooled job: one analysis of ketamap.pooled.ANALYSES on the consortium tables.
from ketamap.adapter import run_step
from ketamap.pooled import run

run_step(
    snakemake,  # noqa: F821
    run,
    analysis=snakemake.params.analysis,  # noqa: F821
    inputs={k: v for k, v in snakemake.input.items() if k != "code"},  # noqa: F821
    output=snakemake.output.result,  # noqa: F821
    figure=snakemake.output.get("figure"),  # noqa: F821
    metrics=snakemake.output.get("metrics"),  # noqa: F821
    options=snakemake.params.options,  # noqa: F821
)
