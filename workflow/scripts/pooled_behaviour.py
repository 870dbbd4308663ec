from ketamap.adapter import run_step
from ketamap.steps import pooled_behaviour

run_step(
    snakemake,  # noqa: F821
    pooled_behaviour,
    analysis=snakemake.wildcards.analysis,  # noqa: F821
    puffs=snakemake.input.puffs,  # noqa: F821
    timecourses=snakemake.input.timecourses,  # noqa: F821
    reward=snakemake.input.reward,  # noqa: F821
    ieeg_responses=(list(snakemake.input.ieeg) or [None])[0],  # noqa: F821
    output=snakemake.output.result,  # noqa: F821
    figure=snakemake.output.figure,  # noqa: F821
    options=snakemake.params.options,  # noqa: F821
)
