# iEEG: per-site channel, response and timecourse tables, then the pooled ketamine effects.
rule harmonize_ieeg:
    input:
        raw="resources/raw/{site}",
        code=code(
            "ieeg.py",
            "ieeg_read.py",
            "ieeg_signal.py",
            "clinical.py",
            "io.py",
            "ids.py",
        ),
    output:
        channels="results/sites/{site}/ieeg_channels.parquet",
        responses="results/sites/{site}/ieeg_responses.parquet",
        timecourses="results/sites/{site}/ieeg_timecourses.parquet",
        synchrony="results/sites/{site}/ieeg_synchrony.parquet",
    log:
        "logs/harmonize/{site}.ieeg.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_largest_mb=25),
        runtime=scaled_runtime(60, per_gb=30),
    params:
        site=site_config,
        config=harmonize_config("ieeg"),
        key=key_fingerprint(config),
    script:
        "../scripts/harmonize_ieeg.py"


rule combine_ieeg_timecourses:
    input:
        tables=expand("results/sites/{site}/ieeg_timecourses.parquet", site=IEEG_SITES),
        code=code("ieeg.py"),
    output:
        "results/tables/ieeg_timecourses.parquet",
    log:
        "logs/tables/ieeg_timecourses.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=10),
    script:
        "../scripts/combine_ieeg_timecourses.py"


rule pooled_ieeg:
    input:
        responses="results/tables/ieeg_responses.parquet",
        synchrony="results/tables/ieeg_synchrony.parquet",
        code=code("pooled/__init__.py", "pooled/ieeg.py", "figures.py"),
    output:
        result=report(
            "results/pooled/ieeg.{name}.parquet",
            caption="../report/ieeg.rst",
            category="iEEG",
            subcategory="ieeg.{name}",
            labels=report_labels("result table", "results/pooled/ieeg.{name}.parquet"),
        ),
        figure=report(
            "results/figures/ieeg.{name}.png",
            caption="../report/ieeg.rst",
            category="iEEG",
            subcategory="ieeg.{name}",
            labels=report_labels(
                "forest plot and per-subject values",
                "results/pooled/ieeg.{name}.parquet",
            ),
        ),
    log:
        "logs/pooled/ieeg.{name}.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=30),
    params:
        options=canonical(config.get("ieeg", {})),
    script:
        "../scripts/pooled_ieeg.py"


rule figure_ieeg_timecourses:
    input:
        timecourses="results/tables/ieeg_timecourses.parquet",
        code=code("figures.py"),
    output:
        report(
            "results/figures/ieeg.timecourses.png",
            caption="../report/ieeg.rst",
            category="iEEG",
            subcategory="ieeg.timecourses",
            labels=report_labels(
                "HFB time courses", "results/tables/ieeg_timecourses.parquet"
            ),
        ),
    log:
        "logs/figures/ieeg.timecourses.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(5, per_gb=10),
    script:
        "../scripts/figure_ieeg_timecourses.py"
