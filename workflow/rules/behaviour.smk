# Behaviour: per-site eyelid and reward tables (mouse labs, iEEG sessions with eyelid video), then
# the pooled behaviour, mouse and cross-species analyses and their figures.
rule harmonize_behaviour:
    input:
        raw=ancient("resources/raw/{site}"),
        content="resources/raw/{site}.content",
        code=code("behaviour.py", "behaviour_read.py", "io.py", "ids.py", "clinical.py"),
    output:
        puffs="results/sites/{site}/behaviour_puffs.parquet",
        timecourses="results/sites/{site}/behaviour_timecourses.parquet",
        reward="results/sites/{site}/reward_seeking.parquet",
        cues="results/sites/{site}/reward_cues.parquet",
    log:
        "logs/harmonize/{site}.behaviour.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_largest_mb=10),
        runtime=scaled_runtime(30, per_gb=20),
    params:
        site=site_config,
        config=harmonize_config("behaviour"),
        key=key_fingerprint(config),
    script:
        "../scripts/harmonize_behaviour.py"


rule pooled_behaviour:
    input:
        puffs="results/tables/behaviour_puffs.parquet",
        timecourses="results/tables/behaviour_timecourses.parquet",
        reward="results/tables/reward_seeking.parquet",
        ieeg=ieeg_responses_input,
        code=code("pooled/__init__.py", "pooled/behaviour.py", "figures.py"),
    output:
        result="results/pooled/{analysis}.parquet",
        figure="results/figures/{analysis}.png",
    log:
        "logs/pooled/{analysis}.log",
    wildcard_constraints:
        analysis="behaviour\.(reflex_blink|sustained_closure)|mouse\.reward_seeking_after_train|cross_species\.timing_signature",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=30),
    params:
        options=pooled_options("{analysis}"),
    script:
        "../scripts/pooled_behaviour.py"


rule figure_behaviour:
    input:
        unpack(behaviour_figure_inputs),
    output:
        "results/figures/behaviour.{kind}.png",
    log:
        "logs/figures/behaviour.{kind}.log",
    wildcard_constraints:
        kind="eyelid|reward|cross_species",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(5, per_gb=10),
    script:
        "../scripts/figure_behaviour.py"
