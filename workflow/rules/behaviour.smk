# Behaviour: per-site eyelid and reward tables (mouse labs, iEEG sessions with eyelid video), then
# the pooled behaviour, mouse and cross-species analyses and their figures.
rule harmonize_behaviour:
    input:
        raw="resources/raw/{site}",
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
        result=report(
            "results/pooled/{analysis}.parquet",
            caption="../report/behaviour.rst",
            category=report_category("{analysis}"),
            subcategory="{analysis}",
            labels=report_labels("result table", "results/pooled/{analysis}.parquet"),
        ),
        figure=report(
            "results/figures/{analysis}.png",
            caption="../report/behaviour.rst",
            category=report_category("{analysis}"),
            subcategory="{analysis}",
            labels=report_labels("forest plot", "results/pooled/{analysis}.parquet"),
        ),
    log:
        "logs/pooled/{analysis}.log",
    wildcard_constraints:
        analysis="behaviour\.(reflex_blink|sustained_closure)|mouse\.reward_seeking_after_train|cross_species\.timing_signature",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=30),
    params:
        options=canonical({k: config.get(k, {}) for k in ("behaviour",)}),
        seed=config.get("seed", 0),
    script:
        "../scripts/pooled_behaviour.py"


rule figure_behaviour:
    input:
        unpack(behaviour_figure_inputs),
    output:
        report(
            "results/figures/behaviour.{kind}.png",
            caption="../report/behaviour.rst",
            category=behaviour_figure_category,
            subcategory=behaviour_figure_subcategory,
            labels=behaviour_figure_labels,
        ),
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
