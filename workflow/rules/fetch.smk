# Each site's dataset, pulled through DVC at the revision pinned in the config.
#
# Fetched data that changed on disk since it was fetched is fetched again: planning rewrites the
# site's stamp resources/raw/.state/<site>.changed (common.smk: check_fetched), a newer input.
#
# Reruns follow content, not timestamps. The fetch is a checkpoint, so Snakemake plans the jobs
# reading its outputs again once it has finished. Those jobs take the fetched tree and its content
# id (resources/raw/<site>.content, the md5 of the dataset's file listing) as ancient() inputs
# (mtimes never rerun them) and the content id as a param (common.smk: fetched_content). A refetch
# of identical data therefore reruns nothing after it; a fetch that brings other bytes reruns
# exactly that site's harmonization and what depends on it.
checkpoint fetch:
    input:
        # no files: starts the fork server while the run is planned (common.smk)
        forkserver=forkserver_while_planning,
        registry=registry_input,
        changed="resources/raw/.state/{site}.changed",
        code=step_code("ketamap.registry"),
    output:
        # fetch.per_session: the DVC storage plugin's index of the dataset (common.smk)
        **({"index": storage_index("{site}")} if PER_SESSION else {}),
        data=directory("resources/raw/{site}"),
        manifest="resources/raw/{site}.fetch.json",
        content="resources/raw/{site}.content",
    log:
        "logs/fetch/{site}.log",
    threads: 1
    # Fixed: the input is the registry's git metadata; the dataset's size is known only after the
    # pull, which streams each file and checks its md5.
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        site=fetch_entry,
        # fetch.per_session: the site's own files only; its session jobs pull the sessions
        sessions=not PER_SESSION,
    run:
        jobs.run("fetch", input, output, params, wildcards, threads, log, config)


# The shared PET atlas, a checkpoint like rule fetch: a refetch of the same atlas reruns nothing after it.
checkpoint fetch_atlas:
    input:
        forkserver=forkserver_while_planning,
        registry=atlas_registry_input,
        changed="resources/raw/.state/atlas.changed",
        code=step_code("ketamap.registry"),
    output:
        data=directory("resources/raw/atlas"),
        manifest="resources/raw/atlas.fetch.json",
        content="resources/raw/atlas.content",
    log:
        "logs/fetch/atlas.log",
    threads: 1
    # Fixed, as for rule fetch.
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        site=atlas_entry,
    run:
        jobs.run("fetch", input, output, params, wildcards, threads, log, config)
