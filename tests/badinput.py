"""The bad-input corpus harness: one small synthetic consortium per session (PET, iEEG and behaviour
sites), one-change copies of a site, and the readers run on them exactly as a harmonize job does.

A case copies one site's dataset, changes one thing, harmonizes the copy with every harmonizer that
site belongs to, and checks the outcome: a :class:`~ketamap.errors.KetamapError` whose message
names the site, the file, the field and what was expected, or tables that record the problem.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SCENARIOS = ("small", "ieeg_small", "behaviour_small")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Consortium:
    root: Path  # the generated datasets, one folder per site, plus atlas/
    config: dict[str, Any]  # a validated workflow config listing every site

    @property
    def atlas(self) -> Path:
        return self.root / "atlas"

    def site(self, site_id: str) -> dict[str, Any]:
        return next(s for s in self.config["sites"] if s["id"] == site_id)

    def site_ids(self, modality: str) -> list[str]:
        return [s["id"] for s in self.config["sites"] if s["modality"] == modality]

    def copy(self, site_id: str, dest: Path) -> Path:
        """A private copy of ``site_id``'s dataset to change (symlinks kept as symlinks)."""
        target = dest / site_id
        shutil.copytree(self.root / site_id, target, symlinks=True)
        return target

    def harmonize(
        self, site_id: str, raw: Path, config: dict[str, Any] | None = None
    ) -> dict[str, pd.DataFrame]:
        """Every per-site table of ``site_id`` read from ``raw``, as its harmonize jobs compute them
        (validated against the schemas, as `write_table` would before writing)."""
        import importlib

        from ketamap import schemas
        from ketamap.harmonize import HARMONIZERS, site_groups
        from ketamap.ids import load_key

        config = config or self.config
        groups = site_groups(config)
        site = next(s for s in config["sites"] if s["id"] == site_id)
        tables: dict[str, pd.DataFrame] = {}
        for h in HARMONIZERS.values():
            if site_id not in groups[h.sites]:
                continue
            module = importlib.import_module(h.module)
            out = module.step(
                site,
                raw,
                load_key(config),
                config[h.options] if h.options else None,
                self.atlas if h.modality == "pet" else None,
            )
            for table in h.tables:
                schemas.to_arrow(out[table], schemas.get_table(table))
            tables.update(out)
        return tables


def build(base: Path, scenarios: tuple[str, ...] = SCENARIOS) -> Consortium:
    """Generate the corpus consortium under ``base`` (about 10 s); a site id in several
    ``scenarios`` is taken from the first."""
    from ketamap import synth
    from ketamap.config import validate_config
    from ketamap.demo import apply_analysis_options

    root = base / "sites"
    entries: list[dict[str, Any]] = []
    options: dict[str, Any] = {}
    for name in scenarios:
        path = REPO / "config" / "scenarios" / f"{name}.yaml"
        out = base / name
        synth.generate(path, out)
        scen = synth.load_scenario(path)
        for child in out.iterdir():
            if child.is_dir() and not (root / child.name).exists():
                root.mkdir(parents=True, exist_ok=True)
                shutil.move(str(child), root / child.name)
        entries += [
            e
            for e in synth.site_configs(scen, "registry", "v1")
            if e["id"] not in {x["id"] for x in entries}
        ]
        options.update(synth.analysis_options(scen))
    config: dict[str, Any] = {
        "sites": entries,
        "pseudonymization": {"key_env": "KETAMAP_PSEUDONYM_KEY", "demo_key": "bad-input-corpus"},
        "clinical": {},
        "atlas": {"registry": "registry", "path": "datasets/atlas", "revision": "v1"},
    }
    apply_analysis_options(config, options)
    return Consortium(root, validate_config(config))
