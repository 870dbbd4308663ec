# Pooled analyses across trials and species, each in the shared result shape.
rule pooled_clinical:
    input:
        subjects="results/tables/subjects.parquet",
        scores="results/tables/clinical_scores.parquet",
        code=code("pooled/__init__.py", "pooled/clinical.py"),
    output:
        result=report(
            "results/pooled/clinical.madrs_change.parquet",
            caption="../report/clinical.rst",
            category="Clinical",
            subcategory="clinical.madrs_change",
            labels=report_labels(
                "result table", "results/pooled/clinical.madrs_change.parquet"
            ),
        ),
        metrics="results/metrics/clinical.json",
    log:
        "logs/pooled/clinical.madrs_change.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=30),
    params:
        options=canonical(
            {
                k: config["clinical"][k]
                for k in ("response_fraction", "remission_threshold")
            }
        ),
    script:
        "../scripts/pooled_clinical.py"
