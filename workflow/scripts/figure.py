# Every figure job: one figure of ketamap.pooled.FIGURES from tables and results.
from ketamap.adapter import run_step
from ketamap.pooled import draw

run_step(
    snakemake,  # noqa: F821
    draw,
    name=snakemake.wildcards.figure,  # noqa: F821
    inputs={k: v for k, v in snakemake.input.items() if k != "code"},  # noqa: F821
    output=snakemake.output[0],  # noqa: F821
)
