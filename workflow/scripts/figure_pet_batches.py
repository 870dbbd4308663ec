from ketamap.adapter import run_step
from ketamap.steps import figure_pet_batches

run_step(
    snakemake,  # noqa: F821
    figure_pet_batches,
    regional=snakemake.input.regional,  # noqa: F821
    subjects=snakemake.input.subjects,  # noqa: F821
    figure=snakemake.output[0],  # noqa: F821
)
