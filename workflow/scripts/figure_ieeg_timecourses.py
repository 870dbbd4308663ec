from ketamap.adapter import run_step
from ketamap.steps import figure_ieeg_timecourses

run_step(
    snakemake,  # noqa: F821
    figure_ieeg_timecourses,
    timecourses=snakemake.input.timecourses,  # noqa: F821
    figure=snakemake.output[0],  # noqa: F821
)
