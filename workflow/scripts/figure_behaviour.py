from ketamap.adapter import run_step
from ketamap.steps import figure_behaviour

inputs = snakemake.input  # noqa: F821
run_step(
    snakemake,  # noqa: F821
    figure_behaviour,
    kind=snakemake.wildcards.kind,  # noqa: F821
    output=snakemake.output[0],  # noqa: F821
    timecourses=inputs.get("timecourses"),
    cues=inputs.get("cues"),
    ieeg_timecourses=inputs.get("ieeg_timecourses"),
    signature=inputs.get("signature"),
)
