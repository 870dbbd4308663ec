from ketamap.adapter import run_step
from ketamap.steps import combine_tables

run_step(
    snakemake,  # noqa: F821
    combine_tables,
    inputs=list(snakemake.input.tables),  # noqa: F821
    table=snakemake.wildcards.table,  # noqa: F821
    output=snakemake.output[0],  # noqa: F821
)
