from ketamap.adapter import run_step
from ketamap.steps import harmonize_behaviour

run_step(
    snakemake,  # noqa: F821
    harmonize_behaviour,
    site=snakemake.params.site,  # noqa: F821
    raw=snakemake.input.raw,  # noqa: F821
    puffs_out=snakemake.output.puffs,  # noqa: F821
    timecourses_out=snakemake.output.timecourses,  # noqa: F821
    reward_out=snakemake.output.reward,  # noqa: F821
    cues_out=snakemake.output.cues,  # noqa: F821
    config=snakemake.params.config,  # noqa: F821
)
