"""SSH and S3 DVC remotes for real: an OpenSSH sshd and a moto S3 server on loopback ports.

The registry is built with the `ketamap registry` command (as the README says) and fetched with
the fetch code of the workflow; every failure of a remote (plugin missing, connection refused, a
silent server, a missing or corrupted object) must be one message naming the remote and the
cause, with no traceback, within the stated timeout. One sshd and one moto server serve the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import make_site, write_tsv
from ketamap.errors import RegistryError
from ketamap.registry import fetch_site
from remote_servers import S3, Sshd, closed_port, moto_s3, silent_port, sshd

KETAMAP = [sys.executable, "-m", "ketamap.cli"]
SHIM = Path(__file__).parent / "shims" / "no_dvc_plugins"  # makes `import dvc_ssh/dvc_s3` fail
# The timeout the error tests pass, and how much longer than it a failure may take to report.
TIMEOUT = 4.0
SLACK = 20.0


def ketamap(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KETAMAP, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def assert_one_clear_error(proc: subprocess.CompletedProcess[str], *patterns: str) -> str:
    """Non-zero exit, no traceback, one `ketamap ...: error:` line matching every pattern."""
    import re

    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ": error: " in lines[0], proc.stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def files_of(root: Path) -> dict[str, bytes]:
    """Every file's bytes (Snakemake's timestamp of a directory output is not data)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".snakemake_timestamp"
    }


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny site datasets (a few kB)."""
    root = tmp_path_factory.mktemp("sites")
    make_site(root / "site_a")
    make_site(root / "site_b", scale="HAM-D-17")
    return root


@pytest.fixture(scope="module")
def ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_env(s3: S3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials in the environment, as a user of an S3 remote would have them."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3.env


def make_bucket(s3: S3, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import boto3

        client = boto3.client("s3", endpoint_url=s3.endpoint, **_boto_credentials(s3))
        client.create_bucket(Bucket=name)


def _boto_credentials(s3: S3) -> dict[str, str]:
    return {
        "aws_access_key_id": s3.env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": s3.env["AWS_SECRET_ACCESS_KEY"],
        "region_name": s3.env["AWS_DEFAULT_REGION"],
    }


def s3_objects(s3: S3, bucket: str) -> dict[str, bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import boto3

        client = boto3.client("s3", endpoint_url=s3.endpoint, **_boto_credentials(s3))
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def s3_put(s3: S3, bucket: str, key: str, body: bytes | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import boto3

        client = boto3.client("s3", endpoint_url=s3.endpoint, **_boto_credentials(s3))
        if body is None:
            client.delete_object(Bucket=bucket, Key=key)
        else:
            client.put_object(Bucket=bucket, Key=key, Body=body)


@pytest.fixture(scope="module")
def ssh_registry(ssh: Sshd, sites: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`ketamap registry` pushing to the sshd, with the keyfile given as a remote option."""
    out = tmp_path_factory.mktemp("ssh_registry") / "registry"
    url = ssh.url("dvc-store")
    proc = ketamap(
        "registry",
        *("--sites", str(sites), "--out", str(out), "--remote", url, "--release", "v1"),
        *("--remote-option", f"keyfile={ssh.keyfile}"),
    )
    assert proc.returncode == 0, proc.stderr
    return {"registry": out, "url": url, "storage": ssh.root / "dvc-store"}


@pytest.fixture(scope="module")
def s3_registry(s3: S3, sites: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`ketamap registry` pushing to the moto server: endpoint as a remote option, keys from env."""
    make_bucket(s3, "consortium")
    out = tmp_path_factory.mktemp("s3_registry") / "registry"
    url = "s3://consortium/dvc-store"
    proc = ketamap(
        "registry",
        *("--sites", str(sites), "--out", str(out), "--remote", url, "--release", "v1"),
        *("--remote-option", f"endpointurl={s3.endpoint}"),
        env=s3.env,
    )
    assert proc.returncode == 0, proc.stderr
    return {"registry": out, "url": url, "bucket": "consortium"}


def _site(registry: Path, site_id: str = "site_a") -> dict:
    return {"id": site_id, "registry": str(registry), "revision": "v1"}


# --- push and fetch ---------------------------------------------------------------------------


def test_ssh_registry_push_and_fetch_are_byte_identical(ssh_registry, sites, tmp_path) -> None:
    reg = ssh_registry["registry"]
    config = (reg / ".dvc" / "config").read_text()
    assert ssh_registry["url"] in config and "keyfile" not in config  # the key stays local
    assert "keyfile" in (reg / ".dvc" / "config.local").read_text()
    assert any(ssh_registry["storage"].rglob("*")), "nothing reached the sshd's storage"
    for site_id in ("site_a", "site_b"):
        got = fetch_site(_site(reg, site_id), tmp_path / site_id)
        assert got["n_files"] == len(files_of(sites / site_id))
        assert files_of(tmp_path / site_id) == files_of(sites / site_id)


def test_s3_registry_push_and_fetch_are_byte_identical(
    s3, s3_registry, s3_env, sites, tmp_path
) -> None:
    reg = s3_registry["registry"]
    assert "endpointurl" in (reg / ".dvc" / "config").read_text()  # shared with partners
    assert any(k.startswith("dvc-store/") for k in s3_objects(s3, s3_registry["bucket"]))
    proc = ketamap(
        "fetch",
        *("--registry", str(reg), "--site", "site_b", "--revision", "v1"),
        *("--out", str(tmp_path / "b"), "--manifest", str(tmp_path / "b.json")),
    )
    assert proc.returncode == 0, proc.stderr
    assert files_of(tmp_path / "b") == files_of(sites / "site_b")
    assert json.loads((tmp_path / "b.json").read_text())["n_files"] == len(
        files_of(sites / "site_b")
    )


def test_workflow_fetch_over_ssh_as_a_partner(ssh, ssh_registry, sites, tmp_path) -> None:
    """The workflow's fetch rule, from a clone of the registry (no .dvc/config.local): the
    partner's key comes from the config's fetch.remote_options."""
    from test_workflow import make_project, snakemake

    def over_ssh(config: dict) -> None:
        config.pop("demo")
        config.pop("atlas")
        site = next(s for s in config["sites"] if s["id"] == "ycu_rct")
        site.update(id="site_a", registry=f"file://{ssh_registry['registry']}", revision="v1")
        site.pop("path", None)
        config["sites"] = [site]
        config["fetch"] = {"timeout": 10, "remote_options": {"keyfile": str(ssh.keyfile)}}

    project = make_project(tmp_path / "p", config_edit=over_ssh)
    snakemake(project, "resources/raw/site_a", "resources/raw/site_a.fetch.json")
    assert files_of(project / "resources/raw/site_a") == files_of(sites / "site_a")
    manifest = json.loads((project / "resources/raw/site_a.fetch.json").read_text())
    assert manifest["revision"] == "v1" and manifest["n_files"] == len(files_of(sites / "site_a"))
    assert "remote timeout 10 s" in (project / "logs/fetch/site_a.log").read_text()


def test_per_session_workflow_over_ssh_as_a_partner(ssh, tmp_path) -> None:
    """fetch.per_session with the registry's DVC remote on the sshd, from a clone of the registry
    (no .dvc/config.local): the key in fetch.remote_options reaches the fetch and the DVC storage
    plugin alike, each session job's sessions come over SSH, and the site's tables are
    byte-identical to one job reading the whole site fetched over SSH."""
    import yaml

    from ketamap import harmonize, synth
    from ketamap.config import validate_config
    from ketamap.harmonize.scatter import in_session_folder
    from ketamap.registry import build_registry, fetch_step
    from test_scatter_workflow import SCENARIO, SITE, _cached_objects, _ran, _snakemake
    from workflow_project import REPO, make_project

    sites = tmp_path / "sites"
    synth.generate(REPO / f"config/scenarios/{SCENARIO}.yaml", sites)
    registry = tmp_path / "registry"
    key = {"keyfile": str(ssh.keyfile)}
    build_registry(sites, registry, ssh.url("per-session-store"), "v1", remote_options=key)
    options = {"timeout": 10, "remote_options": key}

    def partner(config: dict) -> None:
        del config["demo"]
        for entry in config["sites"]:
            entry["registry"], entry["revision"] = f"file://{registry}", "v1"
        config["fetch"] = {"per_session": True, **options}

    project = make_project(tmp_path / "p", SCENARIO, config_edit=partner)
    log = _snakemake(project)
    assert _ran(log, "harmonize_ieeg_session"), log[-3000:]
    assert not list((project / "resources/raw" / SITE).glob("sub-*/ses-*"))
    manifest = json.loads((project / f"resources/raw/{SITE}.fetch.json").read_text())
    assert _cached_objects(project) == {
        f["md5"] for f in manifest["listing"] if in_session_folder(f["path"])
    }

    config = validate_config(yaml.safe_load((project / "config/config.yaml").read_text()))
    site = next(s for s in config["sites"] if s["id"] == SITE)
    whole = tmp_path / "whole"
    fetch_step(site, whole / SITE, whole / f"{SITE}.fetch.json", base=project, options=options)
    outputs = {t: str(whole / f"{t}.parquet") for t in harmonize.HARMONIZERS["ieeg"].tables}
    harmonize.run("ieeg", site, whole / SITE, outputs, config)
    for table, path in outputs.items():
        got = (project / "results/sites" / SITE / f"{table}.parquet").read_bytes()
        assert got == Path(path).read_bytes(), table


SSH_COLLECTED_IN_A_LOOP = """
import asyncio, gc, sys
import snakemake_storage_plugin_dvc as plugin
from sshfs import SSHFileSystem

if sys.argv[1] == "mended":
    plugin._close_ssh_on_its_own_loop()
fs = SSHFileSystem(
    "127.0.0.1", port=int(sys.argv[2]), username=sys.argv[3], client_keys=[sys.argv[4]],
    known_hosts=None, skip_instance_cache=True,
)
fs.ls("/")  # a live connection on fsspec's loop


async def drop():
    # as in Snakemake's main thread: the last reference goes while another loop runs
    global fs
    fs = None
    gc.collect()
    mine = asyncio.current_task()
    return sum("close" in repr(t) for t in asyncio.all_tasks() if t is not mine)


print(asyncio.run(asyncio.wait_for(drop(), 20)))
"""


@pytest.mark.parametrize("finalizer", ["mended", "sshfs"])
def test_an_ssh_connection_collected_while_another_loop_runs_is_closed_on_its_own(
    ssh, finalizer
) -> None:
    """The plugin's retrievals run in worker threads; their SSH filesystems may be collected in
    Snakemake's main thread while it runs a short event loop. sshfs's own finalizer puts the
    connection's close on that loop, where it cannot finish (the connection lives on fsspec's
    loop): once, the loop then never ended (a hang after the last job of the SSH per-session
    test; the stuck task was sshfs's close). The plugin's finalizer leaves no task on the loop
    that happens to run and closes the connection on its own. Both are run: sshfs's must still
    leave its close task on the wrong loop, or the mend is no longer needed."""
    args = [str(ssh.port), ssh.user, str(ssh.keyfile)]
    cmd = [sys.executable, "-c", SSH_COLLECTED_IN_A_LOOP, finalizer, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    on_wrong_loop = int(proc.stdout.strip().splitlines()[-1])
    assert on_wrong_loop == (0 if finalizer == "mended" else 1), proc.stdout + proc.stderr[-2000:]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "package"), [("ssh://127.0.0.1:22/x", "dvc-ssh"), ("s3://bucket/x", "dvc-s3")]
)
def test_push_without_the_plugin_names_the_package(sites, tmp_path, url, package) -> None:
    out = tmp_path / "registry"
    proc = ketamap(
        *("registry", "--sites", str(sites), "--out", str(out), "--remote", url),
        *("--release", "v1"),
        env={"PYTHONPATH": str(SHIM)},
    )
    scheme = url.split(":")[0]
    assert_one_clear_error(
        proc, rf"DVC remote {url}", rf"{scheme}:// remotes need the {package} package"
    )
    assert "Having any troubles" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".registry*"))  # nothing half-made


def test_fetch_without_the_plugin_names_the_package(ssh_registry, tmp_path) -> None:
    proc = ketamap(
        "fetch",
        *("--registry", str(ssh_registry["registry"]), "--site", "site_a", "--revision", "v1"),
        *("--out", str(tmp_path / "a")),
        env={"PYTHONPATH": str(SHIM)},
    )
    assert_one_clear_error(
        proc,
        re_escape(ssh_registry["url"]),
        r"ssh:// remotes need the dvc-ssh package",
    )
    assert "no DVC-tracked dataset" not in proc.stderr
    assert not (tmp_path / "a").exists()


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_push_to_a_refused_port_fails_fast_naming_the_remote(ssh, sites, tmp_path) -> None:
    url = f"ssh://{ssh.user}@127.0.0.1:{closed_port()}/x"
    start = time.monotonic()
    proc = ketamap(
        *("registry", "--sites", str(sites), "--out", str(tmp_path / "r"), "--remote", url),
        *("--release", "v1", "--remote-option", f"keyfile={ssh.keyfile}"),
        *("--timeout", str(TIMEOUT)),
    )
    assert time.monotonic() - start < SLACK
    assert_one_clear_error(proc, re_escape(url), r"connection refused")
    assert not (tmp_path / "r").exists()


def test_push_to_a_silent_server_stops_at_the_timeout(ssh, sites, tmp_path) -> None:
    with silent_port() as port:
        url = f"ssh://{ssh.user}@127.0.0.1:{port}/x"
        start = time.monotonic()
        proc = ketamap(
            *("registry", "--sites", str(sites), "--out", str(tmp_path / "r"), "--remote", url),
            *("--release", "v1", "--remote-option", f"keyfile={ssh.keyfile}"),
            *("--timeout", str(TIMEOUT)),
        )
        took = time.monotonic() - start
    assert TIMEOUT <= took < TIMEOUT + SLACK, took
    assert_one_clear_error(proc, re_escape(url), rf"did not answer within {TIMEOUT:g} s")
    assert not (tmp_path / "r").exists()


def test_s3_push_to_a_silent_endpoint_stops_at_the_timeout(s3, sites, tmp_path) -> None:
    with silent_port() as port:
        start = time.monotonic()
        proc = ketamap(
            *("registry", "--sites", str(sites), "--out", str(tmp_path / "r")),
            *("--remote", "s3://consortium/x", "--release", "v1"),
            *("--remote-option", f"endpointurl=http://127.0.0.1:{port}"),
            *("--timeout", str(TIMEOUT)),
            env=s3.env,
        )
        took = time.monotonic() - start
    assert took < TIMEOUT + SLACK * 2, took
    assert_one_clear_error(proc, r"DVC remote s3://consortium/x", r"did not answer|timeout|Timeout")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("case", ["refused", "silent"])
def test_fetch_from_an_unreachable_ssh_remote_names_it(ssh, ssh_registry, tmp_path, case) -> None:
    with silent_port() as silent:
        port = closed_port() if case == "refused" else silent
        start = time.monotonic()
        with pytest.raises(RegistryError) as err:
            fetch_site(
                _site(ssh_registry["registry"]),
                tmp_path / "a",
                timeout=TIMEOUT,
                remote_options={"port": port},
            )
        took = time.monotonic() - start
    message = str(err.value)
    assert ssh_registry["url"] in message, message
    if case == "refused":
        assert "connection refused" in message and took < SLACK, (took, message)
    else:
        assert f"did not answer within {TIMEOUT:g} s" in message, message
        assert TIMEOUT <= took < TIMEOUT + SLACK, took
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("case", ["refused", "silent"])
def test_fetch_from_an_unreachable_s3_endpoint_names_it(
    s3_registry, s3_env, tmp_path, case
) -> None:
    with silent_port() as silent:
        port = closed_port() if case == "refused" else silent
        start = time.monotonic()
        with pytest.raises(RegistryError) as err:
            fetch_site(
                _site(s3_registry["registry"]),
                tmp_path / "a",
                timeout=TIMEOUT,
                remote_options={"endpointurl": f"http://127.0.0.1:{port}"},
            )
        took = time.monotonic() - start
    message = str(err.value)
    assert s3_registry["url"] in message, message
    assert took < TIMEOUT + SLACK * 2, (took, message)
    assert not (tmp_path / "a").exists()


def test_missing_ssh_object_fails_naming_remote_and_file(ssh_registry, tmp_path) -> None:
    probe = fetch_site(_site(ssh_registry["registry"], "site_b"), tmp_path / "probe")
    target = next(f for f in probe["files"] if f["path"] == "participants.tsv")
    obj = next(ssh_registry["storage"].rglob(target["md5"][2:]))
    hidden = obj.with_name(obj.name + ".hidden")
    obj.rename(hidden)
    try:
        with pytest.raises(RegistryError) as err:
            fetch_site(_site(ssh_registry["registry"], "site_b"), tmp_path / "b")
    finally:
        hidden.rename(obj)
    message = str(err.value)
    assert ssh_registry["url"] in message and "an object is missing" in message, message
    assert "participants.tsv" in message, message
    assert not (tmp_path / "b").exists()


def test_corrupted_ssh_object_never_reaches_the_results(ssh_registry, tmp_path) -> None:
    probe = fetch_site(_site(ssh_registry["registry"]), tmp_path / "probe")
    target = next(f for f in probe["files"] if f["path"] == "participants.tsv")
    obj = next(ssh_registry["storage"].rglob(target["md5"][2:]))
    original = obj.read_bytes()
    obj.chmod(0o644)
    obj.write_bytes(original.replace(b"sub-01", b"sub-99"))
    try:
        with pytest.raises(
            RegistryError,
            match=rf"content hash mismatch for participants.tsv from the DVC remote {re_escape(ssh_registry['url'])}",
        ):
            fetch_site(_site(ssh_registry["registry"]), tmp_path / "a")
        assert not (tmp_path / "a").exists()
        assert not any(b"sub-99" in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    finally:
        obj.write_bytes(original)
    # Repaired remote: the bad copy was not kept anywhere, the fetch works again.
    fetch_site(_site(ssh_registry["registry"]), tmp_path / "a")
    assert (tmp_path / "a" / "participants.tsv").read_bytes() == (
        tmp_path / "probe" / "participants.tsv"
    ).read_bytes()


def test_forged_listing_and_object_never_reach_the_results(ssh, sites, tmp_path) -> None:
    """A remote whose directory listing and object were both replaced (consistent with each
    other): the listing no longer hashes to what the registry's git pins, so nothing is kept."""
    import hashlib

    shutil.copytree(sites / "site_a", tmp_path / "sites" / "site_c")
    (tmp_path / "sites" / "site_c" / "README").write_text(f"only in {tmp_path}\n")
    url = ssh.url("forged-store")
    proc = ketamap(
        *("registry", "--sites", str(tmp_path / "sites"), "--out", str(tmp_path / "registry")),
        *("--remote", url, "--release", "v1", "--remote-option", f"keyfile={ssh.keyfile}"),
    )
    assert proc.returncode == 0, proc.stderr
    storage = ssh.root / "forged-store"
    listing_file = next(storage.rglob("*.dir"))
    listing = json.loads(listing_file.read_text())
    forged = b"participant_id\nsub-forged\n"
    md5 = hashlib.md5(forged).hexdigest()
    for entry in listing:
        if entry["relpath"] == "participants.tsv":
            entry["md5"] = md5
    obj = storage / "files" / "md5" / md5[:2] / md5[2:]
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(forged)
    listing_file.chmod(0o644)
    listing_file.write_text(json.dumps(listing))
    with pytest.raises(
        RegistryError, match=r"the file listing of datasets/site_c from the DVC remote"
    ):
        fetch_site(_site(tmp_path / "registry", "site_c"), tmp_path / "c")
    assert not (tmp_path / "c").exists()
    assert not any(b"sub-forged" in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_missing_and_corrupted_s3_objects(s3, s3_registry, s3_env, tmp_path) -> None:
    probe = fetch_site(_site(s3_registry["registry"]), tmp_path / "probe")
    target = next(f for f in probe["files"] if f["path"] == "participants.tsv")
    objects = s3_objects(s3, s3_registry["bucket"])
    key = next(k for k in objects if k.endswith(target["md5"][2:]))
    original = objects[key]
    s3_put(s3, s3_registry["bucket"], key, None)
    try:
        with pytest.raises(RegistryError) as err:
            fetch_site(_site(s3_registry["registry"]), tmp_path / "a")
        message = str(err.value)
        assert s3_registry["url"] in message and "an object is missing" in message, message
        assert not (tmp_path / "a").exists()
        s3_put(s3, s3_registry["bucket"], key, original.replace(b"sub-01", b"sub-99"))
        with pytest.raises(RegistryError, match=r"content hash mismatch for participants.tsv"):
            fetch_site(_site(s3_registry["registry"]), tmp_path / "a")
        assert not (tmp_path / "a").exists()
    finally:
        s3_put(s3, s3_registry["bucket"], key, original)
    fetch_site(_site(s3_registry["registry"]), tmp_path / "a")
    assert files_of(tmp_path / "a") == files_of(tmp_path / "probe")


# --- atomic registry --------------------------------------------------------------------------


def test_failed_release_leaves_nothing_and_rerun_never_keeps_a_stale_remote(
    ssh, s3, sites, tmp_path
) -> None:
    home = tmp_path / "r"
    home.mkdir()
    out = home / "registry"
    bad = f"ssh://{ssh.user}@127.0.0.1:{closed_port()}/x"
    proc = ketamap(
        *("registry", "--sites", str(sites), "--out", str(out), "--remote", bad),
        *("--release", "v1", "--remote-option", f"keyfile={ssh.keyfile}"),
    )
    assert proc.returncode != 0 and not out.exists()
    assert list(home.iterdir()) == []  # no temporary folder left either
    good = ssh.url("atomic-store")
    proc = ketamap(
        *("registry", "--sites", str(sites), "--out", str(out), "--remote", good),
        *("--release", "v1", "--remote-option", f"keyfile={ssh.keyfile}"),
    )
    assert proc.returncode == 0, proc.stderr
    # The same remote again: its local options (the key) are kept.
    write_tsv(tmp_path / "v2" / "site_a" / "participants.tsv", [["participant_id"], ["sub-01"]])
    proc = ketamap(
        *("registry", "--sites", str(tmp_path / "v2"), "--out", str(out), "--remote", good),
        *("--release", "v2"),
    )
    assert proc.returncode == 0, proc.stderr
    # Another remote: nothing of the previous one is kept.
    make_bucket(s3, "moved")
    write_tsv(tmp_path / "v3" / "site_a" / "participants.tsv", [["participant_id"], ["sub-02"]])
    proc = ketamap(
        *("registry", "--sites", str(tmp_path / "v3"), "--out", str(out)),
        *("--remote", "s3://moved/store", "--release", "v3"),
        *("--remote-option", f"endpointurl={s3.endpoint}"),
        env=s3.env,
    )
    assert proc.returncode == 0, proc.stderr
    config = (out / ".dvc" / "config").read_text()
    assert "s3://moved/store" in config and "ssh://" not in config, config
    local = out / ".dvc" / "config.local"
    assert not local.exists() or "keyfile" not in local.read_text()
    tags = subprocess.run(
        ["git", "tag", "--list"], cwd=out, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tags == ["v1", "v2", "v3"]
    assert [p.name for p in home.iterdir()] == ["registry"]


def test_push_with_a_key_the_server_refuses_says_so(ssh, sites, tmp_path) -> None:
    """An error only DVC sees (the sshd answers, then refuses the key): DVC's own error line,
    not its "Having any troubles?" footer, with the remote URL."""
    other = tmp_path / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    url = ssh.url("refused-key-store")
    proc = ketamap(
        *("registry", "--sites", str(sites), "--out", str(tmp_path / "r"), "--remote", url),
        *("--release", "v1", "--remote-option", f"keyfile={other}"),
    )
    assert_one_clear_error(proc, re_escape(url), r"SSH authentication failed")
    assert "Having any troubles" not in proc.stderr
    assert not (tmp_path / "r").exists()
