# The run manifest. The step is named, not imported: ketamap.manifest imports pandas.
from ketamap.adapter import run_step

run_step(
    snakemake,  # noqa: F821
    "ketamap.manifest:write_run_manifest",
    config=snakemake.params.config,  # noqa: F821
    fetch_manifests=list(snakemake.input.fetched),  # noqa: F821
    outputs=list(snakemake.input.outputs),  # noqa: F821
    path=snakemake.output[0],  # noqa: F821
)
