# Every session job: a batch of session folders of a site -> their pieces, gathered by the site's harmonize job.
from ketamap.adapter import run_step, session_folders
from ketamap.harmonize import run_session, with_pin

run_step(
    snakemake,  # noqa: F821
    run_session,
    modality=snakemake.params.modality,  # noqa: F821
    site=with_pin(snakemake.params.site, snakemake.config),  # noqa: F821
    raw=snakemake.input.raw,  # noqa: F821
    atlas=snakemake.input.get("atlas"),  # noqa: F821
    # fetch.per_session: the session folders the DVC storage plugin retrieved for this job
    sessions=session_folders(snakemake.input),  # noqa: F821
    batch=snakemake.wildcards.batch,  # noqa: F821
    output=snakemake.output.piece,  # noqa: F821
    config=snakemake.params.config,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
