# Harmonization: one rule per modality of ketamap.harmonize.HARMONIZERS (harmonize_<modality>),
# each site's data -> its per-site tables; then one consortium table per table.
#
# A modality harmonized per session (Harmonizer.sessions) gets session jobs first
# (harmonize_<modality>_session, ketamap.harmonize.scatter): each reads and verifies its sessions
# only (a batch of one or more session folders, sized by jobs.session_batch_seconds) and writes
# their pieces; harmonize_<modality> is then the site's gather. Which sessions a site has is read
# from its fetch manifest; before the fetch the gather is planned without them, and Snakemake
# plans them when the fetch (a checkpoint) has finished. A session job's param is the md5 listing
# of its own files: a release changing one session reruns that session's job and the gather.
# A modality reading the shared atlas (Harmonizer.atlas, PET) gets it in its session jobs too.
for h in HARMONIZERS.values():
    if h.sessions:

        rule:
            name:
                f"harmonize_{h.modality}_session"
            input:
                **(
                    {
                        "atlas": ancient("resources/raw/atlas"),
                        "atlas_content": ancient("resources/raw/atlas.content"),
                    }
                    if h.atlas
                    else {}
                ),
                **session_index(),
                raw=ancient("resources/raw/{site}"),
                content=ancient("resources/raw/{site}.content"),
                code=step_code("ketamap.harmonize", h.module),
                sessions=session_storage(h),
            output:
                piece=f"resources/pieces/{{site}}/{h.modality}/{{batch}}.zip",
            log:
                f"logs/harmonize/{{site}}/{h.modality}/{{batch}}.log",
            wildcard_constraints:
                batch=BATCH_ID,
            threads: session_threads(h)
            resources:
                mem_mb=session_mem_mb(h.sessions, **h.session_memory),
                runtime=session_runtime(h.sessions, **h.session_runtime),
            params:
                # an atlas release with other bytes reruns every session job that reads it
                **({"atlas": fetched_content("atlas")} if h.atlas else {}),
                modality=h.modality,
                content=session_content(h),
                site=reader_config,
                config=harmonize_config(h.options),
                key=key_fingerprint(config),
            run:
                jobs.run(
                    "harmonize_session",
                    input,
                    output,
                    params,
                    wildcards,
                    threads,
                    log,
                    config,
                )

    rule:
        name:
            f"harmonize_{h.modality}"
        input:
            **(
                {
                    "atlas": ancient("resources/raw/atlas"),
                    "atlas_content": ancient("resources/raw/atlas.content"),
                }
                if h.atlas
                else {}
            ),
            # The fetched tree by content, not mtime (see fetch.smk): params.content.
            **(session_index() if h.sessions else {}),
            raw=ancient("resources/raw/{site}"),
            content=ancient("resources/raw/{site}.content"),
            code=step_code("ketamap.harmonize", h.module),
            pieces=session_pieces(h),
            sessions=session_storage(h, batch=False) if h.sessions else [],
        output:
            **{t: f"results/sites/{{site}}/{t}.parquet" for t in h.tables},
        log:
            f"logs/harmonize/{{site}}.{h.modality}.log",
        threads: 1
        resources:
            mem_mb=scaled_mem_mb(**h.memory),
            runtime=scaled_runtime(**h.runtime),
        params:
            modality=h.modality,
            sessions=bool(h.sessions),
            content=fetched_content("{site}", *(["atlas"] if h.atlas else [])),
            site=reader_config,
            config=harmonize_config(h.options),
            key=key_fingerprint(config),
        run:
            jobs.run(
                "harmonize", input, output, params, wildcards, threads, log, config
            )


rule combine_table:
    input:
        tables=lambda wildcards: expand(
            "results/sites/{site}/{table}.parquet",
            site=TABLE_SITES[wildcards.table],
            table=wildcards.table,
        ),
        code=step_code("ketamap.harmonize"),
    output:
        "results/tables/{table}.parquet",
    log:
        "logs/tables/{table}.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, per_mb=20),
        runtime=scaled_runtime(10, per_gb=10),
    params:
        table=lambda wildcards: wildcards.table,
    run:
        jobs.run("combine", input, output, params, wildcards, threads, log, config)


# Tables pooled by their harmonizer's own function (e.g. exact channel-weighted time courses).
for table, h in exact_tables().items():
    if table in EXACT:

        rule:
            name:
                f"combine_{table}"
            input:
                tables=expand(
                    "results/sites/{site}/{table}.parquet",
                    site=TABLE_SITES[table],
                    table=table,
                ),
                code=step_code("ketamap.harmonize", h.exact[table].rpartition(".")[0]),
            output:
                table_path(table),
            log:
                f"logs/tables/{table}.log",
            threads: 1
            resources:
                mem_mb=scaled_mem_mb(1000, per_mb=20),
                runtime=scaled_runtime(10, per_gb=10),
            params:
                table=table,
            run:
                jobs.run(
                    "combine",
                    input,
                    output,
                    params,
                    wildcards,
                    threads,
                    log,
                    config,
                )
