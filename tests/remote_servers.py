"""Real servers on loopback for the remote tests: an OpenSSH sshd, a moto S3 server, a silent port.

Each is started and stopped by the caller (a module fixture in test_remotes.py) on a free random
port; nothing here touches a server it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(
    port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def ensure_openssh_server() -> None:
    """Install Debian's openssh-server when sshd is missing (CI runs as root)."""
    if Path(SSHD).exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "openssh-server"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class Sshd:
    port: int
    user: str
    keyfile: Path
    root: Path  # the remote's storage lives under here

    def url(self, path: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.root / path}"


@contextlib.contextmanager
def sshd(base: Path) -> Iterator[Sshd]:
    """An sshd on a free loopback port accepting one generated ed25519 key for the current user."""
    ensure_openssh_server()
    base.mkdir(parents=True, exist_ok=True)
    key = base / "id_ed25519"
    host_key = base / "ssh_host_ed25519_key"
    for k in (key, host_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    authorized = base / "authorized_keys"
    shutil.copy(key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {base / 'sshd.pid'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    log = base / "sshd.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(port, proc, "sshd", log)
        root = base / "storage"
        root.mkdir()
        import getpass

        yield Sshd(port=port, user=getpass.getuser(), keyfile=key, root=root)
    finally:
        _stop(proc)


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]  # credentials and region for clients


@contextlib.contextmanager
def moto_s3(base: Path) -> Iterator[S3]:
    """moto's S3 server mode in a subprocess on a free loopback port (its log in ``base``)."""
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = base / "moto.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, "moto_server", log, timeout=60)
        yield S3(
            endpoint=f"http://127.0.0.1:{port}",
            env={
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
    finally:
        _stop(proc)


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A TCP listener that accepts connections and never sends a byte (a hung server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = srv.accept()
                held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        srv.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()
