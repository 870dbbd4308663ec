from ketamap.adapter import run_step
from ketamap.steps import figure_change_scatter

run_step(
    snakemake,  # noqa: F821
    figure_change_scatter,
    result=snakemake.input.result,  # noqa: F821
    regional=snakemake.input.regional,  # noqa: F821
    subjects=snakemake.input.subjects,  # noqa: F821
    scores=snakemake.input.scores,  # noqa: F821
    figure=snakemake.output[0],  # noqa: F821
)
