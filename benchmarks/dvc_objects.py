"""Objects touched on the DVC remote: one session through the storage plugin vs ``dvc pull``.

    .venv/bin/python benchmarks/dvc_objects.py [--sessions 1000] [--files-per-session 4]

In a temporary folder:

1. **A registry**: git + ``dvc init``, a local-folder default remote, one dataset folder
   ``datasets/cohort`` (BIDS-like: ``participants.tsv``, ``dataset_description.json`` and, per
   session, ``sub-XXXX/ses-YY/`` with ``--files-per-session`` small files of random bytes from a
   fixed seed, every file's content distinct), ``dvc add``-ed, committed, tagged ``v1`` and
   ``dvc push``-ed. The data and the registry's DVC cache are then deleted: everything anyone
   gets must come from the remote.
2. **The plugin**: a real ``snakemake --cores 1`` of a one-rule Snakefile whose input is
   ``storage.dvc("dvc://<registry>@v1//datasets/cohort/sub-0001/ses-01")`` (the rule copies the
   folder out), with a fresh plugin cache (``--storage-dvc-cache``). The plugin imported is this
   checkout's (``PYTHONPATH``), not whatever the venv has installed.
3. **dvc pull of the dataset**: ``git clone`` of the registry, then ``dvc pull`` in the clone
   (fresh DVC cache, which is what a user has after cloning). For reference, also ``dvc pull``
   of the session folder alone (DVC's granular pull of a path inside a tracked folder) in
   another fresh clone.

**Counting objects.** The remote is a folder, so "touching an object" is a system call on a
file under ``<remote>/files/md5/``. Each side is run once under ``strace -f -y`` (every process
and thread; ``-y`` prints the path behind each file descriptor), tracing ``openat``, the
``stat`` family, ``read``/``pread64``/``readv``, ``sendfile`` and ``copy_file_range``. From the
trace: the distinct objects *opened* (successfully, for reading), the distinct objects
*stat-ed*, and the bytes actually read out of object file descriptors (``read`` results, and
``sendfile``/``copy_file_range`` whose source is an object: ``shutil.copyfile`` on Linux uses
``sendfile``). strace was chosen because it sees every access, whatever library makes it, needs
no privileges beyond ptrace of our own children (inotify would miss ``stat`` and cannot attribute
bytes; fanotify needs ``CAP_SYS_ADMIN``); a reflink copy (``FICLONE``, on btrfs/XFS) would move no
bytes through these calls, which is why the bytes are also compared with the objects' sizes.
Independently, the objects that arrived in the fresh cache (the plugin's ``<cache>/md5/``, DVC's
``.dvc/cache/files/md5/``) are counted and summed. The script fails unless, for the plugin, both
counts equal the session's distinct files + 1 (the dataset's ``.dir`` listing), no other object
was opened, the bytes read equal the objects' sizes, and the copied files are md5-identical to
the generated ones; and, for ``dvc pull``, both counts equal the whole dataset + 1.

**Timing.** Traced runs are slow, so wall times come from a second, untraced run of each side
with fresh caches (and fresh clones). The plugin's time is a whole Snakemake run (start-up,
planning, the job); a Snakemake run of the same rule on a local folder (no storage) is timed
too, to show Snakemake's own share. The ``dvc pull`` time excludes the ``git clone`` (printed
apart).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SRC = REPO / "packages" / "snakemake-storage-plugin-dvc" / "src"
PYTHON = sys.executable
DATASET = "datasets/cohort"
TAG = "v1"
DATE = 1_700_000_000
SEED = 20250611

SNAKEFILE = """
rule session:
    input:
        storage.dvc(config["query"]) if config.get("query") else config["local"],
    output:
        directory("out/session"),
    shell:
        "cp -r {input} {output}"
"""

OBJECT = re.compile(r"/files/md5/([0-9a-f]{2})/([0-9a-f]{30}(?:\.dir)?)$")


# -- the registry ---------------------------------------------------------------------------


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        GIT_AUTHOR_NAME="registry",
        GIT_AUTHOR_EMAIL="registry@example.invalid",
        GIT_COMMITTER_NAME="registry",
        GIT_COMMITTER_EMAIL="registry@example.invalid",
        GIT_AUTHOR_DATE=f"@{DATE} +0000",
        GIT_COMMITTER_DATE=f"@{DATE} +0000",
        GIT_CONFIG_NOSYSTEM="1",
        DVC_NO_ANALYTICS="1",
    )
    e.update(extra)
    return e


def run(cmd: list[str], cwd: Path, environ: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=environ or env())
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def git(args: list[str], cwd: Path) -> str:
    return run(["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args], cwd)


def dvc(args: list[str], cwd: Path, environ: dict[str, str] | None = None) -> str:
    return run([PYTHON, "-m", "dvc", *args], cwd, environ)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def session_ids(n: int) -> list[tuple[str, str]]:
    """n sessions: 4 sessions per subject (the last subject may have fewer)."""
    return [(f"sub-{i // 4 + 1:04d}", f"ses-{i % 4 + 1:02d}") for i in range(n)]


def write_dataset(root: Path, sessions: int, per_session: int) -> dict[str, str]:
    """The BIDS-like dataset; returns relpath -> md5 of every file."""
    rng = random.Random(SEED)
    files: dict[str, bytes] = {
        "dataset_description.json": b'{"Name": "cohort", "BIDSVersion": "1.9.0"}\n',
    }
    subjects = sorted({sub for sub, _ in session_ids(sessions)})
    files["participants.tsv"] = ("participant_id\n" + "".join(f"{s}\n" for s in subjects)).encode()
    for sub, ses in session_ids(sessions):
        stem = f"{sub}_{ses}"
        names = [
            f"{stem}_scans.tsv",
            f"anat/{stem}_T1w.nii.gz",
            f"func/{stem}_task-rest_bold.nii.gz",
            f"func/{stem}_task-rest_bold.json",
        ]
        names += [f"func/{stem}_task-rest_run-{k:02d}_bold.nii.gz" for k in range(2, per_session)]
        for name in names[:per_session]:
            if name.endswith(".tsv"):
                data = f"filename\tacq_time\n{stem}\t{rng.randrange(10**9)}\n".encode()
            elif name.endswith(".json"):
                data = json.dumps({"RepetitionTime": 2.0, "id": stem, "r": rng.random()}).encode()
            elif "T1w" in name:
                data = rng.randbytes(rng.randrange(8_000, 16_000))
            else:
                data = rng.randbytes(rng.randrange(16_000, 32_000))
            files[f"{sub}/{ses}/{name}"] = data
    out = {}
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[rel] = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if len(set(out.values())) != len(out):
        raise SystemExit("generated files are not all distinct; object counts would be ambiguous")
    return out


def build_registry(base: Path, sessions: int, per_session: int) -> tuple[Path, Path, dict]:
    registry, remote = base / "registry", base / "remote"
    registry.mkdir()
    git(["init", "-q", "-b", "main"], registry)
    dvc(["init", "-q"], registry)
    dvc(["remote", "add", "-d", "storage", str(remote)], registry)
    git(["add", "-A"], registry)
    git(["commit", "-q", "-m", "init"], registry)
    truth = write_dataset(registry / DATASET, sessions, per_session)
    dvc(["add", "-q", DATASET], registry)
    dvc(["push", "-q"], registry)
    git(["add", "-A"], registry)
    git(["commit", "-q", "-m", f"release {TAG}"], registry)
    git(["tag", "-a", TAG, "-m", f"release {TAG}"], registry)
    shutil.rmtree(registry / DATASET)
    shutil.rmtree(registry / ".dvc" / "cache", ignore_errors=True)
    return registry, remote, truth


# -- counting -------------------------------------------------------------------------------


@dataclass
class Trace:
    opened: set[str] = field(default_factory=set)  # objects opened for reading
    stated: set[str] = field(default_factory=set)  # objects stat-ed (existence, size)
    read_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dirs_listed: int = 0  # remote folders opened as directories (listings)


SYSCALLS = "openat,stat,lstat,newfstatat,statx,read,pread64,readv,sendfile,copy_file_range"
LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(.*)$")


def parse_strace(path: Path, remote: Path) -> Trace:
    """Objects under ``remote`` opened, stat-ed and read in an ``strace -f -y`` log."""
    root = str(remote.resolve())
    trace = Trace()
    pending: dict[str, str] = {}
    for raw in path.read_text(errors="replace").splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        pid, text = m.groups()
        if text.endswith("<unfinished ...>"):
            pending[pid] = text[: -len("<unfinished ...>")]
            continue
        resumed = re.match(r"^<\.\.\. \w+ resumed>(.*)$", text)
        if resumed:
            text = pending.pop(pid, "") + resumed.group(1)
        if root not in text:
            continue
        call = text.split("(", 1)[0]
        result = text.rsplit("=", 1)[-1].strip().split(" ", 1)[0]
        ok = not result.startswith("-1")
        if call == "openat":
            target = re.search(r'"([^"]*)"', text)
            if not target or not target.group(1).startswith(root) or not ok:
                continue
            obj = OBJECT.search(target.group(1))
            if "O_DIRECTORY" in text:
                trace.dirs_listed += 1
            elif obj and "O_WRONLY" not in text and "O_RDWR" not in text:
                trace.opened.add(obj.group(1) + obj.group(2))
        elif call in ("stat", "lstat", "newfstatat", "statx"):
            target = re.search(r'"([^"]*)"', text)
            obj = OBJECT.search(target.group(1)) if target else None
            if obj and target.group(1).startswith(root):
                trace.stated.add(obj.group(1) + obj.group(2))
        elif call in ("read", "pread64", "readv", "sendfile", "copy_file_range") and ok:
            args = text.split("(", 1)[1]
            if call == "sendfile":  # sendfile(out_fd, in_fd, ...): the source is the second
                args = args.split(">, ", 1)[1] if ">, " in args else ""
            src = re.match(r"-?\d+<([^>]*)>", args)
            obj = OBJECT.search(src.group(1)) if src else None
            if obj and src.group(1).startswith(root):
                trace.read_bytes[obj.group(1) + obj.group(2)] += int(result)
    return trace


def cache_objects(folder: Path) -> dict[str, int]:
    """Objects (``ab/cdef...`` -> size) in a content-addressed cache folder."""
    found = {}
    if folder.is_dir():
        for path in folder.rglob("*"):
            obj = OBJECT.search("/files/md5/" + path.relative_to(folder).as_posix())
            if path.is_file() and obj:
                found[obj.group(1) + obj.group(2)] = path.stat().st_size
    return found


def remote_size(remote: Path, obj: str) -> int:
    return (remote / "files" / "md5" / obj[:2] / obj[2:]).stat().st_size


# -- the two sides --------------------------------------------------------------------------


def execute(
    cmd: list[str], cwd: Path, environ: dict[str, str], strace: Path | None = None
) -> float:
    """Run ``cmd`` (under strace when ``strace`` names a log); its wall time in seconds."""
    if strace is not None:
        trace_cmd = ["strace", "-f", "-qq", "-y", "-s", "0", "-e", f"trace={SYSCALLS}"]
        cmd = [*trace_cmd, "-o", str(strace), "--", *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=environ)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}{proc.stderr}")
    return elapsed


@dataclass
class Side:
    name: str
    seconds: float
    trace: Trace
    cached: dict[str, int]  # objects that arrived in the fresh cache


def snakemake_cmd(cache: Path, config: str) -> list[str]:
    cmd = [PYTHON, "-m", "snakemake", "--cores", "1", "--storage-dvc-cache", str(cache)]
    return [*cmd, "--config", config]


def plugin_side(base: Path, registry: Path, remote: Path, session: str, trace: bool) -> Side:
    label = "traced" if trace else "timed"
    work, cache = base / f"plugin-{label}", base / f"plugin-cache-{label}"
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    query = f"dvc://{registry}@{TAG}//{DATASET}/{session}"
    log = base / f"plugin-{label}.strace" if trace else None
    environ = plugin_env(base)
    seconds = execute(snakemake_cmd(cache, f"query={query}"), work, environ, log)
    traced = parse_strace(log, remote) if log else Trace()
    return Side("plugin", seconds, traced, cache_objects(cache / "md5"))


def plugin_env(base: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PLUGIN_SRC), os.environ.get("PYTHONPATH")) if p)
    return env(PYTHONPATH=path, DVC_SITE_CACHE_DIR=str(base / "dvc-site-cache"))


def snakemake_baseline(base: Path, local: Path) -> float:
    """A Snakemake run of the same rule on a local folder: Snakemake's own start-up and job."""
    work = base / "snakemake-local"
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    cmd = snakemake_cmd(base / "unused-cache", f"local={local}")
    return execute(cmd, work, plugin_env(base))


def dvc_side(
    base: Path, registry: Path, remote: Path, name: str, target: str | None, trace: bool
) -> tuple[Side, float]:
    """``git clone`` + ``dvc pull [target]`` in the clone; (the pull, the clone's seconds)."""
    label = f"{'pull-session' if target else 'pull-all'}-{'traced' if trace else 'timed'}"
    clone = base / f"clone-{label}"
    start = time.perf_counter()
    git(["clone", "-q", "--branch", TAG, str(registry), str(clone)], base)
    clone_seconds = time.perf_counter() - start
    log = base / f"{label}.strace" if trace else None
    environ = env(DVC_SITE_CACHE_DIR=str(base / "dvc-site-cache"))
    cmd = [PYTHON, "-m", "dvc", "pull", "-q", *([target] if target else [])]
    seconds = execute(cmd, clone, environ, log)
    traced = parse_strace(log, remote) if log else Trace()
    side = Side(name, seconds, traced, cache_objects(clone / ".dvc" / "cache" / "files" / "md5"))
    return side, clone_seconds


# -- checks and report ----------------------------------------------------------------------


def check(
    side: Side, expected: set[str], remote: Path, problems: list[str], once: bool = False
) -> None:
    """The objects opened and cached are exactly ``expected``, each read whole (exactly once
    when ``once``: ``dvc pull`` reads the ``.dir`` listing several times)."""
    tr = side.trace
    if tr.opened != expected:
        problems.append(
            f"{side.name}: opened {len(tr.opened)} objects on the remote, expected "
            f"{len(expected)} (extra {sorted(tr.opened - expected)[:5]}, "
            f"missing {sorted(expected - tr.opened)[:5]})"
        )
    sizes = {o: remote_size(remote, o) for o in expected}
    short = {
        o
        for o in expected
        if tr.read_bytes.get(o, 0) < sizes[o] or (once and tr.read_bytes[o] != sizes[o])
    }
    if short:
        problems.append(
            f"{side.name}: bytes read do not match the object size for {len(short)} objects "
            f"(e.g. {sorted(short)[:3]})"
        )
    if set(side.cached) != expected:
        problems.append(
            f"{side.name}: {len(side.cached)} objects in the fresh cache, expected {len(expected)}"
        )


def landed(folder: Path) -> dict[str, str]:
    """relpath -> md5 of the files under ``folder`` (not Snakemake's directory() marker)."""
    return {
        p.relative_to(folder).as_posix(): md5(p)
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".snakemake_timestamp"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--files-per-session", type=int, default=4)
    parser.add_argument("--session", default=None, help="default: the middle session")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        raise SystemExit("strace is needed (apt-get install strace)")

    base = Path(tempfile.mkdtemp(prefix="dvc-objects-"))
    try:
        start = time.perf_counter()
        registry, remote, truth = build_registry(base, args.sessions, args.files_per_session)
        build_seconds = time.perf_counter() - start
        sub, ses = session_ids(args.sessions)[args.sessions // 2]
        session = args.session or f"{sub}/{ses}"
        dir_obj = cache_objects(remote / "files" / "md5")
        listings = [o for o in dir_obj if o.endswith(".dir")]
        assert len(listings) == 1, listings
        listing = listings[0]
        in_session = {r: h for r, h in truth.items() if r.startswith(session + "/")}
        if not in_session:
            raise SystemExit(f"no session {session} in the dataset")
        want_plugin = set(in_session.values()) | {listing}
        want_all = set(truth.values()) | {listing}
        if set(dir_obj) != want_all:
            raise SystemExit(f"the remote holds {len(dir_obj)} objects, expected {len(want_all)}")
        total_bytes = sum(dir_obj.values())

        problems: list[str] = []
        # Traced runs: what is touched.
        p_tr = plugin_side(base, registry, remote, session, trace=True)
        copied = landed(base / "plugin-traced" / "out" / "session")
        expected_files = {r[len(session) + 1 :]: h for r, h in in_session.items()}
        if copied != expected_files:
            problems.append(
                f"plugin: the files landed differ from the dataset's ({len(copied)} landed, "
                f"{len(expected_files)} expected; md5 or names differ)"
            )
        check(p_tr, want_plugin, remote, problems, once=True)
        d_tr, _ = dvc_side(base, registry, remote, "dvc pull", None, trace=True)
        pulled = landed(base / "clone-pull-all-traced" / DATASET)
        if pulled != truth:
            problems.append("dvc pull: the files pulled differ from the dataset's")
        check(d_tr, want_all, remote, problems)
        g_tr, _ = dvc_side(
            base, registry, remote, "dvc pull <session>", f"{DATASET}/{session}", trace=True
        )
        # Timed runs, untraced, fresh caches and clones.
        p_t = plugin_side(base, registry, remote, session, trace=False)
        d_t, clone_s = dvc_side(base, registry, remote, "dvc pull", None, trace=False)
        g_t, _ = dvc_side(
            base, registry, remote, "dvc pull <session>", f"{DATASET}/{session}", trace=False
        )
        local_s = snakemake_baseline(base, base / "plugin-traced" / "out" / "session")

        n_files = len(truth)
        print(
            f"dataset {DATASET}: {args.sessions} sessions x {args.files_per_session} files "
            f"+ 2 top-level files = {n_files} files, {len(want_all)} objects on the remote "
            f"({total_bytes / 1e6:.1f} MB); registry built and pushed in {build_seconds:.0f} s"
        )
        print(
            f"session {session}: {len(in_session)} files "
            f"({sum(dir_obj[h] for h in in_session.values()) / 1e3:.1f} kB) "
            f"+ the .dir listing ({dir_obj[listing] / 1e3:.1f} kB)"
        )
        print(
            f"{'':30} {'opened':>8} {'stat-ed':>8} {'in cache':>9} {'MB read':>9} "
            f"{'MB cached':>10} {'dirs listed':>12} {'wall s':>8}"
        )
        for traced, timed_side in ((p_tr, p_t), (d_tr, d_t), (g_tr, g_t)):
            label = {
                "plugin": "plugin, one session",
                "dvc pull": "dvc pull, whole dataset",
                "dvc pull <session>": "dvc pull <session folder>",
            }[traced.name]
            print(
                f"{label:30} {len(traced.trace.opened):8d} {len(traced.trace.stated):8d} "
                f"{len(traced.cached):9d} {sum(traced.trace.read_bytes.values()) / 1e6:9.3f} "
                f"{sum(traced.cached.values()) / 1e6:10.3f} {traced.trace.dirs_listed:12d} "
                f"{timed_side.seconds:8.2f}"
            )
        print(
            f"snakemake of the same rule on a local folder (no storage): {local_s:.2f} s; "
            f"git clone of the registry (before each dvc pull): {clone_s:.2f} s"
        )
        ratio_obj = len(d_tr.trace.opened) / max(1, len(p_tr.trace.opened))
        ratio_bytes = sum(d_tr.trace.read_bytes.values()) / max(
            1, sum(p_tr.trace.read_bytes.values())
        )
        print(
            f"ratio dvc pull / plugin: objects {ratio_obj:.0f}x, bytes {ratio_bytes:.0f}x, "
            f"wall time {d_t.seconds / p_t.seconds:.2f}x"
        )
        print(
            f"plugin: {len(p_tr.trace.opened)} objects opened = {len(in_session)} session files "
            f"+ 1 listing (cache: {len(p_tr.cached)}); copied files md5-identical: "
            f"{'yes' if copied == expected_files else 'NO'}"
        )
        if problems:
            print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
            raise SystemExit(1)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
