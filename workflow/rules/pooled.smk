# Pooled analyses across trials and species: one rule per module of ketamap.pooled
# (pooled_clinical, pooled_pet, pooled_ieeg, pooled_behaviour), each analysis of ANALYSES a job
# in the shared result shape; then the figures of FIGURES drawn from tables and results.
for module in sorted({a.module for a in ANALYSES.values()}):
    members = [a for a in ANALYSES.values() if a.module == module]
    kind = members[0]
    # A module with one analysis (clinical: result + metrics) gets a rule without wildcards, so
    # its metrics file keeps the module's name; the others take the analysis as a wildcard.
    name = kind.name if len(members) == 1 else "{analysis}"
    # Every result and figure goes into the report (make report): see common.smk.
    outputs = {
        "result": report(
            f"results/pooled/{name}.parquet",
            caption=caption(module),
            category=report_category(name),
            subcategory=name,
            labels=report_labels("result table", f"results/pooled/{name}.parquet"),
        )
    }
    if kind.figure:
        outputs["figure"] = report(
            f"results/figures/{name}.png",
            caption=caption(module),
            category=report_category(name),
            subcategory=name,
            labels=report_labels(kind.shows, f"results/pooled/{name}.parquet"),
        )
    else:
        outputs["metrics"] = f"results/metrics/{module.rsplit('.', 1)[-1]}.json"

    rule:
        name:
            kind.rule
        input:
            unpack(
                lambda wildcards, name=name: analysis_inputs(name.format(**wildcards))
            ),
            code=step_code("ketamap.pooled", module),
        output:
            **outputs,
        log:
            f"logs/pooled/{name}.log",
        wildcard_constraints:
            analysis="|".join(re.escape(a.name) for a in members),
        threads: 1
        resources:
            mem_mb=scaled_mem_mb(1000, per_mb=20),
            runtime=scaled_runtime(30, per_gb=30),
        params:
            analysis=lambda wildcards, name=name: name.format(**wildcards),
            options=lambda wildcards, name=name: pooled_options(
                name.format(**wildcards)
            ),
        run:
            jobs.run("pooled", input, output, params, wildcards, threads, log, config)


# One rule per figure rule of FIGURES (figures sharing a rule take the figure as a wildcard).
for rule_name in sorted({f.rule for f in FIGURES.values()}):
    members = [f.name for f in FIGURES.values() if f.rule == rule_name]

    rule:
        name:
            rule_name
        input:
            unpack(figure_inputs),
            code=step_code("ketamap.pooled", *{FIGURES[f].module for f in members}),
        output:
            report(
                "results/figures/{figure}.png",
                caption=caption(FIGURES[members[0]].module),
                category=figure_category,
                subcategory=figure_subcategory,
                labels=figure_labels,
            ),
        log:
            "logs/figures/{figure}.log",
        wildcard_constraints:
            figure="|".join(re.escape(f) for f in members),
        threads: 1
        resources:
            mem_mb=scaled_mem_mb(1000, per_mb=20),
            runtime=scaled_runtime(10, per_gb=10),
        run:
            jobs.run("figure", input, output, params, wildcards, threads, log, config)
