# What produced the results: each site's revision and hashes, code version, config and outputs.
rule manifest:
    input:
        fetched=fetch_manifests(),
        outputs=[*table_outputs(), *pooled_outputs(), *figure_outputs()],
    output:
        "results/manifest.json",
    log:
        "logs/manifest.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=config,
    script:
        "../scripts/manifest.py"
