# Participants and symptom scores: per-site tables, then the consortium tables.
rule harmonize_clinical:
    input:
        raw=ancient("resources/raw/{site}"),
        content="resources/raw/{site}.content",
        code=code(
            "clinical.py",
            "io.py",
            "ids.py",
            "scales.py",
            "schemas/columns.yaml",
            "schemas/tables.yaml",
            "schemas/scales.yaml",
        ),
    output:
        subjects="results/sites/{site}/subjects.parquet",
        scores="results/sites/{site}/clinical_scores.parquet",
    log:
        "logs/harmonize/{site}.clinical.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20, files=["*.tsv"]),
        runtime=scaled_runtime(10, per_gb=10, files=["*.tsv"]),
    params:
        site=site_config,
        config=canonical({k: config[k] for k in ("pseudonymization",)}),
        key=key_fingerprint(config),
    script:
        "../scripts/harmonize_clinical.py"


rule combine_table:
    input:
        tables=table_inputs,
        code=code("schemas/columns.yaml", "schemas/tables.yaml"),
    output:
        "results/tables/{table}.parquet",
    log:
        "logs/tables/{table}.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=10),
    script:
        "../scripts/combine_table.py"
