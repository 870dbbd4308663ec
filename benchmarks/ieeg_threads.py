"""Threads inside an iEEG session job (``jobs.session_threads``): 1 against 2, in one run.

    .venv/bin/python benchmarks/ieeg_threads.py [--channels 64] [--minutes 5] [--repeat 3]

(a) ``hfb_envelope`` of ``--channels`` x ``--minutes`` of white noise at 2 kHz, with scipy.fft's
workers set to 1, then to 2 (what a session job given 2 threads sets): its channel blocks run on
that many threads. (b) a whole session job, ``ketamap.harmonize.run_session``, of one site of the
default scenario (reading, filtering, epochs, pieces), all its sessions in one job, with
``threads=1`` and ``threads=2``. Best of ``--repeat`` each; the outputs must be identical (the
envelope's array, the piece file's bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import fft

REPO = Path(__file__).resolve().parents[1]


def best(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def envelope(channels: int, minutes: float, repeat: int) -> None:
    from ketamap.harmonize.ieeg.signal import hfb_envelope

    x = np.random.default_rng(0).standard_normal((channels, int(2000 * 60 * minutes)))
    out = {}

    def run(workers: int) -> None:
        with fft.set_workers(workers):
            out[workers] = hfb_envelope(x, 2000.0, (70.0, 150.0), 10.0)

    one, two = best(repeat, lambda: run(1)), best(repeat, lambda: run(2))
    assert np.array_equal(out[1], out[2]), "2 threads changed the envelope"
    print(f"(a) hfb_envelope, {channels} ch x {minutes:g} min at 2 kHz")
    print(f"    1 thread {one:6.2f} s   2 threads {two:6.2f} s   speed-up {one / two:4.2f}x")


def session_job(repeat: int) -> None:
    from ketamap import harmonize, integrity, synth
    from ketamap.config import validate_config
    from ketamap.harmonize import scatter

    with tempfile.TemporaryDirectory() as tmp:
        sites = Path(tmp) / "sites"
        synth.generate(REPO / "config/scenarios/default.yaml", sites)
        config = validate_config(_config())
        site = _sites(sites)[0]
        raw = sites / site["id"]
        files = [
            {
                "path": p.relative_to(raw).as_posix(),
                "md5": integrity.file_hash(p, "md5"),
                "bytes": p.stat().st_size,
            }
            for p in sorted(raw.rglob("*"))
            if p.is_file()
        ]
        Path(f"{raw}.fetch.json").write_text(json.dumps({"files": files}))
        sessions = scatter.sessions(raw, "ieeg")
        batch = f"{sessions[0]}--{sessions[-1]}"
        digests = {}

        def run(threads: int) -> None:
            out = Path(tmp) / f"{threads}.zip"
            harmonize.run_session("ieeg", site, raw, batch, str(out), config, threads=threads)
            digests[threads] = hashlib.sha256(out.read_bytes()).hexdigest()

        one, two = best(repeat, lambda: run(1)), best(repeat, lambda: run(2))
        assert digests[1] == digests[2], "2 threads changed the piece"
        mb = sum(f["bytes"] for f in files if "/ieeg/" in f["path"]) / 2**20
        print(f"(b) run_session, site {site['id']}: {len(sessions)} recordings, {mb:.0f} MB")
        print(f"    1 thread {one:6.2f} s   2 threads {two:6.2f} s   speed-up {one / two:4.2f}x")


def _config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def _sites(sites: Path) -> list[dict]:
    """The default scenario's iEEG site entries, as the workflow's config lists them."""
    from ketamap import synth

    scenario = synth.load_scenario(REPO / "config/scenarios/default.yaml")
    entries = synth.site_configs(scenario, "unused", "v1")
    return [e for e in entries if list((sites / e["id"]).glob("sub-*/ses-*/ieeg"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    envelope(args.channels, args.minutes, args.repeat)
    session_job(args.repeat)


if __name__ == "__main__":
    main()
