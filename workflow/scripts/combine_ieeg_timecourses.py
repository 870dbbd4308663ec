from ketamap.adapter import run_step
from ketamap.steps import combine_ieeg_timecourses

run_step(
    snakemake,  # noqa: F821
    combine_ieeg_timecourses,
    inputs=list(snakemake.input.tables),  # noqa: F821
    output=snakemake.output[0],  # noqa: F821
)
