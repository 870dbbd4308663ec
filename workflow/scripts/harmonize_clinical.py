from ketamap.adapter import run_step
from ketamap.steps import harmonize_clinical

run_step(
    snakemake,  # noqa: F821
    harmonize_clinical,
    site=snakemake.params.site,  # noqa: F821
    raw=snakemake.input.raw,  # noqa: F821
    subjects_out=snakemake.output.subjects,  # noqa: F821
    scores_out=snakemake.output.scores,  # noqa: F821
    config=snakemake.params.config,  # noqa: F821
)
