# PET: the shared atlas, per-site regional SUVR and scan tables, then the pooled PET analyses.
rule fetch_atlas:
    input:
        registry=atlas_registry_input,
        code=code("registry.py", "steps.py"),
    output:
        data=directory("resources/raw/atlas"),
        manifest="resources/raw/atlas.fetch.json",
    log:
        "logs/fetch/atlas.log",
    threads: 1
    # Fixed, as for rule fetch.
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        site=atlas_entry,
    script:
        "../scripts/fetch.py"


rule harmonize_pet:
    input:
        raw="resources/raw/{site}",
        atlas="resources/raw/atlas",
        units="schemas/pet_units.yaml",
        code=code(
            "pet.py",
            "pet_image.py",
            "pet_sidecar.py",
            "pet_timing.py",
            "clinical.py",
            "io.py",
            "ids.py",
        ),
    output:
        regional="results/sites/{site}/pet_regional.parquet",
        sessions="results/sites/{site}/pet_sessions.parquet",
    log:
        "logs/harmonize/{site}.pet.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_largest_mb=2, files=["*.nii.gz", "*.nii"]),
        runtime=scaled_runtime(30, per_gb=10, files=["*.nii.gz", "*.nii"]),
    params:
        site=site_config,
        config=harmonize_pet_config(),
        key=key_fingerprint(config),
    script:
        "../scripts/harmonize_pet.py"


rule pooled_pet:
    input:
        regional="results/tables/pet_regional.parquet",
        subjects="results/tables/subjects.parquet",
        scores="results/tables/clinical_scores.parquet",
        code=code(
            "pooled/__init__.py",
            "pooled/pet.py",
            "pooled/clinical.py",
            "figures.py",
            "steps.py",
        ),
    output:
        result=report(
            "results/pooled/pet.{name}.parquet",
            caption="../report/pet.rst",
            category="PET",
            subcategory="pet.{name}",
            labels=report_labels("result table", "results/pooled/pet.{name}.parquet"),
        ),
        figure=report(
            "results/figures/pet.{name}.png",
            caption="../report/pet.rst",
            category="PET",
            subcategory="pet.{name}",
            labels=report_labels("forest plot", "results/pooled/pet.{name}.parquet"),
        ),
    log:
        "logs/pooled/pet.{name}.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(30, per_gb=30),
    params:
        options=pooled_pet_options,
    script:
        "../scripts/pooled_pet.py"


rule figure_change_scatter:
    input:
        result="results/pooled/pet.change_vs_improvement.parquet",
        regional="results/tables/pet_regional.parquet",
        subjects="results/tables/subjects.parquet",
        scores="results/tables/clinical_scores.parquet",
        code=code("figures.py", "pooled/pet.py"),
    output:
        report(
            "results/figures/pet.change_vs_improvement.scatter.png",
            caption="../report/pet.rst",
            category="PET",
            subcategory="pet.change_vs_improvement",
            labels=report_labels(
                "scatter of change vs improvement",
                "results/pooled/pet.change_vs_improvement.parquet",
            ),
        ),
    log:
        "logs/figures/pet.change_vs_improvement.scatter.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=10),
    script:
        "../scripts/figure_change_scatter.py"


rule figure_pet_batches:
    input:
        regional="results/tables/pet_regional.parquet",
        subjects="results/tables/subjects.parquet",
        code=code("figures.py", "pooled/pet.py", "steps.py"),
    output:
        report(
            "results/figures/pet.batches.png",
            caption="../report/pet.rst",
            category="PET",
            subcategory="pet.baseline_trd_vs_hc",
            labels=report_labels(
                "SUVR by acquisition batch",
                "results/pooled/pet.baseline_trd_vs_hc.parquet",
            ),
        ),
    log:
        "logs/figures/pet.batches.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=10),
    script:
        "../scripts/figure_pet_batches.py"
