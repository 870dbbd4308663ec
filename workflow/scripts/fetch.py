# Every fetch job (a site's dataset, the atlas): pull at the pinned revision, verify, record.
from ketamap.adapter import run_step

run_step(
    snakemake,  # noqa: F821
    "ketamap.registry:fetch_step",  # named, not imported (DVC is imported where it runs)
    site=snakemake.params.site,  # noqa: F821
    dest=snakemake.output.data,  # noqa: F821
    manifest=snakemake.output.manifest,  # noqa: F821
    content=snakemake.output.content,  # noqa: F821
    # Read from the config, not params: how this machine reaches the remotes (keyfile, timeout)
    # changes nothing in the data, so editing it must not rerun the fetch and all after it.
    options=snakemake.config.get("fetch", {}),  # noqa: F821
    # False (fetch.per_session): the site's own files only; the atlas is always pulled whole
    sessions=snakemake.params.get("sessions", True),  # noqa: F821
    # fetch.per_session: the storage plugin's index, planning's answers for the session inputs
    index=snakemake.output.get("index"),  # noqa: F821
)
