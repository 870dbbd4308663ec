# Every combine job: the per-site tables -> one consortium table.
from ketamap.adapter import run_step
from ketamap.harmonize import combine

run_step(
    snakemake,  # noqa: F821
    combine,
    table=snakemake.params.table,  # noqa: F821
    inputs=list(snakemake.input.tables),  # noqa: F821
    output=snakemake.output[0],  # noqa: F821
)
