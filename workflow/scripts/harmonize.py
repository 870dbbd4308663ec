# Every harmonize job: one site's data -> its per-site tables, by its modality's step.
from ketamap.adapter import run_step, session_folders
from ketamap.harmonize import run, scatter, with_pin

run_step(
    snakemake,  # noqa: F821
    run,
    modality=snakemake.params.modality,  # noqa: F821
    site=with_pin(snakemake.params.site, snakemake.config),  # noqa: F821
    raw=snakemake.input.raw,  # noqa: F821
    atlas=snakemake.input.get("atlas"),  # noqa: F821
    # fetch.per_session: the session folders the DVC storage plugin retrieved for this job
    sessions=session_folders(snakemake.input),  # noqa: F821
    outputs=dict(snakemake.output.items()),  # noqa: F821
    config=snakemake.params.config,  # noqa: F821
    # a gather: the piece files of the site's session jobs
    pieces=list(snakemake.input.pieces) if snakemake.params.sessions else None,  # noqa: F821
)
if snakemake.params.sessions:  # noqa: F821
    # piece files of earlier batches of this site, which this gather did not read
    scatter.remove_stale_pieces(list(snakemake.input.pieces))  # noqa: F821
