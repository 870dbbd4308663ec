# Every harmonize job: one site's data -> its per-site tables, by its modality's step.
from pathlib import Path

from ketamap.adapter import run_step
from ketamap.harmonize import run, with_pin

run_step(
    snakemake,  # noqa: F821
    run,
    modality=snakemake.params.modality,  # noqa: F821
    site=with_pin(snakemake.params.site, snakemake.config),  # noqa: F821
    raw=snakemake.input.raw,  # noqa: F821
    atlas=snakemake.input.get("atlas"),  # noqa: F821
    outputs=dict(snakemake.output.items()),  # noqa: F821
    config=snakemake.params.config,  # noqa: F821
    # a gather: session id -> piece (pieces are named <session>.zip)
    pieces=(
        {Path(p).stem: p for p in snakemake.input.pieces}  # noqa: F821
        if snakemake.params.sessions  # noqa: F821
        else None
    ),
)
