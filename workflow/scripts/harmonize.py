# Every harmonize job: one site's data -> its per-site tables, by its modality's step.
from ketamap.adapter import run_step
from ketamap.harmonize import run

run_step(
    snakemake,  # noqa: F821
    run,
    modality=snakemake.params.modality,  # noqa: F821
    site=snakemake.params.site,  # noqa: F821
    raw=snakemake.input.raw,  # noqa: F821
    atlas=snakemake.input.get("atlas"),  # noqa: F821
    outputs=dict(snakemake.output.items()),  # noqa: F821
    config=snakemake.params.config,  # noqa: F821
)
