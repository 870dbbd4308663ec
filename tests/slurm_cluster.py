"""A real single-node SLURM cluster for the tests: Debian's slurm-wlm and munge, no accounting.

Everything lives in one temporary folder: the munge key, socket, pid and log files, the slurm.conf
that ``SLURM_CONF`` points at, the controller's state, the node's spool and both daemons' logs. The
daemons listen on free ports, so the cluster clashes with no other SLURM or munge on the machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sacct", "sinfo")


def which(name: str) -> str | None:
    """A binary's path. The daemons live in /usr/sbin, which a minimal PATH (e.g. `env -i
    PATH=/usr/bin:/bin`) leaves out, so the sbin folders are searched too."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=search)


class SlurmUnavailableError(Exception):
    """No cluster can be started here: not root (slurmd and munged need root), or SLURM is missing
    and apt-get cannot install it."""


def install() -> None:
    """Install slurm-wlm and munge with apt-get when a binary is missing (needs root)."""
    if os.geteuid() != 0:
        raise SlurmUnavailableError(
            f"a SLURM test cluster needs root (slurmd runs jobs as their user, munged as munge); "
            f"uid is {os.geteuid()}"
        )
    if all(which(b) for b in BINARIES):
        return
    if shutil.which("apt-get") is None:
        raise SlurmUnavailableError(
            f"slurm-wlm and munge are not installed and there is no apt-get: "
            f"install {' '.join(PACKAGES)} (Debian package names)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confdef"]
    for attempt in ("install", "update, then install"):  # a stale package list: update once
        if attempt != "install":
            subprocess.run(["apt-get", "-q", "update"], env=env, capture_output=True, check=False)
        proc = subprocess.run(
            [*apt, "install", "--no-install-recommends", *PACKAGES],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            break
    if proc.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stderr[-3000:]}")
    missing = [b for b in BINARIES if which(b) is None]
    if missing:
        raise RuntimeError(f"after apt-get install, still missing: {', '.join(missing)}")


def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


@dataclass
class Cluster:
    root: Path
    host: str
    cpus: int
    memory_mb: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a shell on this cluster's submit host has: SLURM_CONF."""
        return {"SLURM_CONF": str(self.conf)}

    def log(self, daemon: str = "slurmctld") -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(cmd),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def queue(self) -> list[tuple[str, str, str]]:
        """(job id, name, state) of every job squeue lists, finished ones included."""
        out = self.run("squeue", "--noheader", "--states=all", "--format=%i|%j|%T").stdout
        return [tuple(line.split("|", 2)) for line in out.splitlines() if line.strip()]  # type: ignore[misc]

    def start(self) -> None:
        munge = self.root / "munge"
        for sub in ("state", "spool", "log", "munge"):
            (self.root / sub).mkdir(parents=True)
        self.root.chmod(0o755)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        shutil.chown(munge, "munge", "munge")
        munge.chmod(0o755)  # the socket must be reachable by every user
        shutil.chown(key, "munge", "munge")
        sock = munge / "munge.socket"
        self._spawn(
            "munged",
            [
                "setpriv",
                "--reuid=munge",
                "--regid=munge",
                "--init-groups",
                str(which("munged")),
                "--foreground",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
        )
        self._wait_for(lambda: sock.exists(), 30, "munged socket")
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=local",
                    f"SlurmctldHost={self.host}",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={slurmd_port}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={sock}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "AccountingStorageType=accounting_storage/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "ReturnToService=2",
                    # A finished job stays in squeue this long: the status command's only source
                    # without accounting (the launcher warns below 300 s).
                    "MinJobAge=3600",  # finished jobs stay in squeue for the whole test module
                    "KillWait=5",
                    "InactiveLimit=0",
                    "SlurmctldTimeout=30",
                    "SlurmdTimeout=60",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    f"NodeName={self.host} CPUs={self.cpus} RealMemory={self.memory_mb} "
                    "State=UNKNOWN",
                    "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        self._spawn("slurmctld", [str(which("slurmctld")), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [str(which("slurmd")), "-D", "-N", self.host, "-f", str(self.conf)])
        self._wait_for(self._node_ready, 60, f"node {self.host} idle in sinfo")

    def _node_ready(self) -> bool:
        out = self.run("sinfo", "--noheader", "--format=%T", timeout=10).stdout.strip()
        return out in ("idle", "mixed", "allocated")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        with (self.root / "log" / f"{name}.out").open("wb") as out:
            self.procs[name] = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )

    def _wait_for(self, ready, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                        + (self.root / "log" / f"{name}.out").read_text(errors="replace")[-3000:]
                        + self.log(name)[-3000:]
                    )
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {seconds:.0f} s waiting for {what}")

    def stop(self) -> None:
        """Cancel what is left, then stop slurmd, slurmctld and munged (in that order)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user", "root", "--full", timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_cluster() -> Cluster:
    install()
    root = Path(tempfile.mkdtemp(prefix="ketamap-slurm-"))
    cluster = Cluster(
        root=root,
        host=socket.gethostname().split(".")[0],
        cpus=os.cpu_count() or 1,
        memory_mb=max(_memory_mb() - 2048, 1024),
    )
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
