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
    # Hashes every output by streaming: memory fixed, time grows with the outputs.
    resources:
        mem_mb=1000,
        runtime=scaled_runtime(5, per_gb=2),
    params:
        config=canonical(config),
    run:
        jobs.run("manifest", input, output, params, wildcards, threads, log, config)
