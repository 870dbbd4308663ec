"""Clinical part of the synthetic consortium: participants, sessions and depression scores.

Every human site gets the BIDS clinical files of ``docs/site_data.md``: ``dataset_description.json``,
``participants.tsv``/``.json``, one ``sessions.tsv`` per participant and a phenotype score table with
its sidecar. Each site writes them its own way (sex codes, age format, group and arm labels, session
labels, scale, missing final newline) so the readers are exercised on the mess real sites send.

Generative model (all parameters in the scenario, in MADRS points):

- baseline MADRS ``B = clip(round(N(mu_g, sd_g)), 0, 60)`` for diagnostic group ``g``;
- randomised participants draw a change ``C ~ N(mu_arm, sd_arm)``; with ``match_moments`` the
  changes of one arm at one site are standardised to exactly the planted mean and sample sd;
- post MADRS ``P = clip(round(B + C), 0, 60)``;
- a HAM-D-17 site writes ``clip(round(link^-1(score)), 0, 52)`` where ``link`` is the HAM-D-17 to
  MADRS equipercentile link read from ``schemas/scales.yaml`` (one place for those anchors).

The planted truths (mean change per arm, response and remission rates) are computed exactly from
this model, rounding and clipping included, by summing over the integer score grid.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from ketamap.errors import ConfigError
from ketamap.scales import from_madrs, load_scales, scale_range, to_madrs
from ketamap.synth._io import write_json, write_tsv
from ketamap.synth._rng import stable_int, stream

NAME = "clinical"
ANALYSIS = "clinical.madrs_change"
MADRS_MAX = 60
GROUP_ORDER = ("trd", "hc", "epilepsy")
SCORED_GROUPS = ("trd", "hc")  # epilepsy patients (iEEG sites) have no symptom scores
ARM_ORDER = ("ketamine", "placebo")
BIDS_VERSION = "1.10.0"
_ISO = "%Y-%m-%dT%H:%M:%S"
_WORD_SEX = {True: ("female", "Female", "FEMALE"), False: ("male", "Male", "MALE")}
_LABEL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_GROUP_TEXT = {
    "trd": "treatment-resistant depression",
    "hc": "healthy control",
    "epilepsy": "epilepsy patient with implanted electrodes",
}
_ARM_TEXT = {"ketamine": "ketamine 0.5 mg/kg IV over 40 min", "placebo": "placebo (saline) IV"}


@dataclass(frozen=True)
class Participant:
    """One synthetic participant with everything the clinical files (and later modalities) need.

    Attributes
    ----------
    label
        BIDS participant label without the ``sub-`` prefix.
    group
        Diagnostic group key: ``"trd"``, ``"hc"`` or ``"epilepsy"`` (iEEG sites).
    arm
        ``"ketamine"``, ``"placebo"`` or None outside the randomisation.
    age
        Completed years at baseline; None when the site writes ``n/a``.
    female
        Sex, True for female.
    sessions
        ``(visit, session label, acq_time)`` per visit, baseline first; an epilepsy patient has
        visits ``baseline`` and ``ketamine``.
    madrs_baseline
        Baseline MADRS (integer, 0-60); 0 and never written for an epilepsy patient.
    madrs_change
        The latent continuous change drawn for a randomised participant (None otherwise); later
        modalities correlate their planted effects with it.
    madrs_post
        Post MADRS (integer, 0-60) or None without a post visit.
    post_missing
        True when the post score is written as ``n/a`` (missed assessment).
    """

    label: str
    group: str
    arm: str | None
    age: int | None
    female: bool
    sessions: tuple[tuple[str, str, str], ...]
    madrs_baseline: int
    madrs_change: float | None
    madrs_post: int | None
    post_missing: bool


# --------------------------------------------------------------------------- scales


def _madrs_to_site_scale(madrs: np.ndarray, scale: str) -> np.ndarray:
    """Integer totals a site scoring ``scale`` writes for MADRS totals (inverse link, rounded, clipped)."""
    lo, hi = scale_range(scale)
    return np.clip(np.round(from_madrs(madrs, scale)), lo, hi).astype(int)


def observed_madrs(site: dict[str, Any], madrs: np.ndarray) -> np.ndarray:
    """MADRS(-equivalent) values an analysis recovers from what ``site`` writes for ``madrs``.

    Identity for a MADRS site; for a HAM-D-17 site the round trip MADRS -> written integer
    HAM-D-17 -> MADRS equivalent, which is what a reader that converts with the same link sees.
    """
    madrs = np.asarray(madrs, dtype=float)
    if site["scale"] == "madrs":
        return madrs
    return to_madrs(_madrs_to_site_scale(madrs, site["scale"]).astype(float), site["scale"])


# --------------------------------------------------------------------------- plug-in contract


def applies(site: dict[str, Any]) -> bool:
    """The clinical part is written for every human site."""
    return bool(site["species"] == "human")


def validate(scenario: dict[str, Any], source: str | None) -> None:
    """Check what the schema cannot: group consistency, labels, visits, readable scales.

    Raises
    ------
    ConfigError
        Naming the site and the dotted field of the first problem found.
    """
    for i, site in enumerate(scenario["sites"]):
        where = f"sites[{i}]"
        groups = site.get("groups")
        if site["species"] != "human":
            if groups:
                raise ConfigError(
                    "diagnostic groups are only generated for human sites",
                    site=site["id"],
                    file=source,
                    field=f"{where}.groups",
                    hint="remove 'groups' or set species: human",
                )
            continue
        if not groups:
            raise ConfigError(
                "a human site needs its participants",
                site=site["id"],
                file=source,
                field=f"{where}.groups",
                expected="groups with trd and/or hc",
            )
        trd = groups.get("trd")
        if trd is not None:
            if ("arms" in trd) == ("n" in trd):
                raise ConfigError(
                    "give exactly one of 'arms' (randomised) or 'n' (baseline only)",
                    site=site["id"],
                    file=source,
                    field=f"{where}.groups.trd",
                )
            if "arms" in trd and sum(int(v) for v in trd["arms"].values()) == 0:
                raise ConfigError(
                    "the arms hold no participants",
                    site=site["id"],
                    file=source,
                    field=f"{where}.groups.trd.arms",
                    expected="at least one participant in some arm",
                )
        for key, group in groups.items():
            age = group["age"]
            inside = norm.cdf((age["max"] - age["mean"]) / age["sd"]) - norm.cdf(
                (age["min"] - age["mean"]) / age["sd"]
            )
            if not age["min"] < age["max"] or inside < 1e-3:
                raise ConfigError(
                    f"age range [{age['min']}, {age['max']}] is empty or too unlikely under "
                    f"mean {age['mean']}, sd {age['sd']}",
                    site=site["id"],
                    file=source,
                    field=f"{where}.groups.{key}.age",
                    expected="min below max, covering at least 0.1 % of the distribution",
                )
        labels = site["session_labels"]
        if "baseline" not in labels:
            raise ConfigError(
                "a human site needs a baseline session label",
                site=site["id"],
                file=source,
                field=f"{where}.session_labels.baseline",
                expected="a label like ses-pre",
            )
        if "epilepsy" in groups and labels.get("ketamine") in (None, labels["baseline"]):
            raise ConfigError(
                "epilepsy patients need a ketamine session label distinct from baseline",
                site=site["id"],
                file=source,
                field=f"{where}.session_labels.ketamine",
                expected="a label like ses-ket",
            )
        if _site_arms(site) and "post" not in labels:
            raise ConfigError(
                "a site with randomised arms needs a post-treatment session label",
                site=site["id"],
                file=source,
                field=f"{where}.session_labels.post",
                expected="a label like ses-post",
            )
        if labels.get("post") == labels["baseline"]:
            raise ConfigError(
                "baseline and post session labels are the same",
                site=site["id"],
                file=source,
                field=f"{where}.session_labels",
            )
        _check_labels(site, where, source)
        try:
            dt.date.fromisoformat(site["acq_start"])
        except ValueError:
            raise ConfigError(
                f"'{site['acq_start']}' is not a calendar date",
                site=site["id"],
                file=source,
                field=f"{where}.acq_start",
                expected="YYYY-MM-DD",
            ) from None


def _check_labels(site: dict[str, Any], where: str, source: str | None) -> None:
    """Every participant label must format, be letters and digits only, and be unique."""
    total = sum(count for _, _, count in _group_blocks(site))
    seen: set[str] = set()
    for n in range(1, total + 1):
        try:
            label = site["id_format"].format(n=n)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"'{site['id_format']}' is not a usable format string ({exc})",
                site=site["id"],
                file=source,
                field=f"{where}.id_format",
                expected="a Python format string using only {n}, e.g. YCU{n:03d}",
            ) from None
        if not label or not set(label) <= _LABEL_CHARS:
            raise ConfigError(
                f"participant label '{label}' is not letters and digits only",
                site=site["id"],
                file=source,
                field=f"{where}.id_format",
                expected="a BIDS label (A-Z, a-z, 0-9)",
            )
        if label in seen:
            raise ConfigError(
                f"participant label '{label}' repeats",
                site=site["id"],
                file=source,
                field=f"{where}.id_format",
                expected="a format giving a different label for every number",
            )
        seen.add(label)


def reader_options(site: dict[str, Any]) -> dict[str, Any]:
    """Reader options matching what :func:`write_site` writes for ``site``.

    ``sex_codes`` is present only for a site writing numeric sex codes (1 = male, 2 = female).
    A site without scored groups (epilepsy patients only) needs no clinical option.
    """
    if not _scored(site):
        return {}
    labels = site["session_labels"]
    visits = {labels["baseline"]: "baseline"}
    if "post" in labels:
        visits[labels["post"]] = "post"
    options: dict[str, Any] = {
        "visits": visits,
        "scores": site["score_file"],
        "score_column": site["score_column"],
    }
    if site["sex_style"] == "numeric":
        options["sex_codes"] = {"1": "male", "2": "female"}
    return options


def write_site(scenario: dict[str, Any], site: dict[str, Any], site_dir: Path) -> None:
    """Write the clinical BIDS files of one site (see the module docstring)."""
    people = simulate_site(scenario, site)
    newline = bool(site["trailing_newline"])
    has_arms = bool(_site_arms(site))

    write_json(
        site_dir / "dataset_description.json",
        {
            "Name": f"{site['trial']} ({site['id']})",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": [
                {
                    "Name": "ketamap.synth",
                    "Description": (
                        f"Synthetic data of scenario '{scenario['name']}' (seed {scenario['seed']}); "
                        "no real participants."
                    ),
                }
            ],
        },
    )

    header = ["participant_id", "age", "sex", "group"] + (["arm"] if has_arms else [])
    rows = []
    for p in people:
        row = [f"sub-{p.label}", _age_text(site, p), _sex_text(site, p)]
        row.append(site["group_labels"][p.group])
        if has_arms:
            row.append(site["arm_labels"][p.arm] if p.arm else "n/a")
        rows.append(row)
    write_tsv(site_dir / "participants.tsv", header, rows, trailing_newline=newline)
    write_json(site_dir / "participants.json", _participants_sidecar(site, people, has_arms))

    for p in people:
        sub = f"sub-{p.label}"
        write_tsv(
            site_dir / sub / f"{sub}_sessions.tsv",
            ["session_id", "acq_time"],
            [[label, when] for _, label, when in p.sessions],
            trailing_newline=newline,
        )

    if not _scored(site):
        return
    score_rows = []
    for p in people:
        baseline = _score_text(site, p.madrs_baseline)
        score_rows.append([f"sub-{p.label}", site["session_labels"]["baseline"], baseline])
        if p.madrs_post is not None:
            post = "n/a" if p.post_missing else _score_text(site, p.madrs_post)
            score_rows.append([f"sub-{p.label}", site["session_labels"]["post"], post])
    score_path = site_dir / site["score_file"]
    write_tsv(
        score_path,
        ["participant_id", "session_id", site["score_column"]],
        score_rows,
        trailing_newline=newline,
    )
    write_json(score_path.with_suffix(".json"), _score_sidecar(site))


# --------------------------------------------------------------------------- simulation


def _scored(site: dict[str, Any]) -> bool:
    """Whether the site has participants with symptom scores (trd or hc)."""
    return any(key in (site.get("groups") or {}) for key in SCORED_GROUPS)


def _site_arms(site: dict[str, Any]) -> dict[str, int]:
    """The site's non-empty arms in the fixed order ketamine, placebo."""
    arms = (site.get("groups") or {}).get("trd", {}).get("arms", {})
    return {arm: int(arms[arm]) for arm in ARM_ORDER if int(arms.get(arm, 0)) > 0}


def _group_blocks(site: dict[str, Any]) -> list[tuple[str, str | None, int]]:
    """``(group, arm, count)`` blocks in numbering order; arms share one shuffled block."""
    groups = site.get("groups") or {}
    blocks: list[tuple[str, str | None, int]] = []
    for key in GROUP_ORDER:
        group = groups.get(key)
        if group is None:
            continue
        if "arms" in group:
            blocks.extend((key, arm, n) for arm, n in _site_arms(site).items())
        else:
            blocks.append((key, None, int(group["n"])))
    return blocks


def _truncated_normal(
    rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float, size: int
) -> np.ndarray:
    """Draw from N(mean, sd) restricted to [lo, hi] by redrawing (deterministic for a seed)."""
    kept = np.empty(0)
    for _ in range(10_000):
        if kept.size >= size:
            return kept[:size]
        draws = rng.normal(mean, sd, size=max(2 * size, 16))
        kept = np.concatenate([kept, draws[(draws >= lo) & (draws <= hi)]])
    raise ConfigError(
        f"age range [{lo}, {hi}] is too unlikely under mean {mean}, sd {sd}",
        expected="a range that covers a reasonable part of the distribution",
    )


def _k_of(fraction: float, n: int) -> int:
    """Round ``fraction * n`` half up to a count."""
    return int(np.floor(float(fraction) * n + 0.5))


def simulate_site(scenario: dict[str, Any], site: dict[str, Any]) -> list[Participant]:
    """Draw the participants of one site, deterministically from (seed, site id).

    Two independent streams are used: ``clinical.roster`` (allocation, age, sex, dates, missing
    ages) and ``clinical.scores`` (baseline, change, missing post scores), so score parameters
    can change without moving ages or dates.

    Returns
    -------
    list of Participant
        In numbering order (trd first, then hc); the order rows are written.
    """
    seed = int(scenario["seed"])
    rng = stream(seed, site["id"], "clinical.roster")
    groups = site["groups"]

    keys: list[str] = []
    arms: list[str | None] = []
    ages: list[float] = []
    females: list[bool] = []
    for key in GROUP_ORDER:
        if key not in groups:
            continue
        group = groups[key]
        members: list[str | None]
        if "arms" in group:
            members = [arm for arm, n in _site_arms(site).items() for _ in range(n)]
            members = [members[i] for i in rng.permutation(len(members))]
        else:
            members = [None] * int(group["n"])
        a = group["age"]
        ages.extend(
            _truncated_normal(rng, a["mean"], a["sd"], a["min"], a["max"], len(members)).tolist()
        )
        females.extend((rng.random(len(members)) < group["sex_female_fraction"]).tolist())
        keys.extend([key] * len(members))
        arms.extend(members)
    total = len(keys)

    start = dt.datetime.fromisoformat(site["acq_start"])
    day = rng.integers(0, int(site["acq_window_days"]) + 1, size=total)
    slot = rng.integers(0, 16, size=(total, 2))
    extra = rng.integers(0, 4, size=total)
    no_age = set(rng.choice(total, size=_k_of(site["missing_age_fraction"], total), replace=False))
    labels = site["session_labels"]

    srng = stream(seed, site["id"], "clinical.scores")
    clinical = scenario["clinical"]
    baseline = np.zeros(total, dtype=int)
    for key in SCORED_GROUPS:
        idx = [i for i in range(total) if keys[i] == key]
        if idx:
            b = clinical["baseline"][key]
            baseline[idx] = np.clip(
                np.round(srng.normal(b["mean"], b["sd"], len(idx))), 0, MADRS_MAX
            )
    change: list[float | None] = [None] * total
    post: list[int | None] = [None] * total
    for arm in ARM_ORDER:
        idx = [i for i in range(total) if arms[i] == arm]
        if not idx:
            continue
        c = clinical["change"][arm]
        draws = srng.normal(c["mean"], c["sd"], len(idx))
        if clinical["match_moments"]:
            draws = _match_moments(draws, c["mean"], c["sd"])
        for i, d in zip(idx, draws, strict=True):
            change[i] = float(d)
            post[i] = int(np.clip(np.round(baseline[i] + d), 0, MADRS_MAX))
    randomised = [i for i in range(total) if arms[i] is not None]
    k_missing = _k_of(clinical["missing_post_fraction"], len(randomised))
    missing_post = {randomised[j] for j in srng.choice(len(randomised), k_missing, replace=False)}

    people = []
    for i in range(total):
        first = start + dt.timedelta(days=int(day[i]), hours=9, minutes=30 * int(slot[i, 0]))
        sessions = [("baseline", labels["baseline"], first.strftime(_ISO))]
        if keys[i] == "epilepsy":
            # Same admission: the ketamine session 1-4 days after baseline.
            ket = dt.datetime.combine(
                first.date() + dt.timedelta(days=1 + int(extra[i])), dt.time(9)
            ) + dt.timedelta(minutes=30 * int(slot[i, 1]))
            sessions.append(("ketamine", labels["ketamine"], ket.strftime(_ISO)))
        if arms[i] is not None:
            later = dt.datetime.combine(
                first.date() + dt.timedelta(days=int(site["post_delay_days"]) + int(extra[i])),
                dt.time(9),
            ) + dt.timedelta(minutes=30 * int(slot[i, 1]))
            sessions.append(("post", labels["post"], later.strftime(_ISO)))
        people.append(
            Participant(
                label=site["id_format"].format(n=i + 1),
                group=keys[i],
                arm=arms[i],
                age=None if i in no_age else int(np.floor(ages[i])),
                female=bool(females[i]),
                sessions=tuple(sessions),
                madrs_baseline=int(baseline[i]),
                madrs_change=change[i],
                madrs_post=post[i],
                post_missing=i in missing_post,
            )
        )
    return people


def _match_moments(draws: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """Standardise ``draws`` to exactly ``mean`` and sample sd ``sd`` (ddof 1).

    A single draw cannot carry an sd; it is set to the mean.
    """
    if draws.size < 2:
        return np.full(draws.shape, float(mean))
    z = (draws - draws.mean()) / draws.std(ddof=1)
    return mean + sd * z


# --------------------------------------------------------------------------- formatting


def _age_text(site: dict[str, Any], p: Participant) -> str:
    if p.age is None:
        return "n/a"
    style = site["age_style"]
    if style == "suffix":
        return f"{p.age}y"
    if style == "decimal":
        return f"{p.age:.1f}"
    return str(p.age)


def _sex_text(site: dict[str, Any], p: Participant) -> str:
    style = site["sex_style"]
    if style == "numeric":
        return "2" if p.female else "1"
    if style == "word":
        variants = _WORD_SEX[p.female]
        # The case variant is a fixed function of the label, so it needs no random stream.
        return variants[stable_int(p.label) % len(variants)]
    return "F" if p.female else "M"


def _score_text(site: dict[str, Any], madrs: int) -> str:
    if site["scale"] == "madrs":
        return str(int(madrs))
    return str(int(_madrs_to_site_scale(np.asarray([madrs], dtype=float), site["scale"])[0]))


def _participants_sidecar(
    site: dict[str, Any], people: list[Participant], has_arms: bool
) -> dict[str, Any]:
    present = [key for key in GROUP_ORDER if any(p.group == key for p in people)]
    sex_levels = (
        {"1": "male", "2": "female"}
        if site["sex_style"] == "numeric"
        else {"F": "female", "M": "male"}
        if site["sex_style"] == "letter"
        else {"female": "female", "male": "male"}
    )
    age_text = "Age at baseline in completed years"
    if site["age_style"] == "suffix":
        age_text += ", written with a 'y' suffix"
    sidecar: dict[str, Any] = {
        "participant_id": {"Description": "Unique participant label"},
        "age": {"Description": age_text, "Units": "year"},
        "sex": {"Description": "Sex of the participant", "Levels": sex_levels},
        "group": {
            "Description": "Diagnostic group",
            "Levels": {site["group_labels"][key]: _GROUP_TEXT[key] for key in present},
        },
    }
    if has_arms:
        sidecar["arm"] = {
            "Description": "Randomised treatment arm (n/a outside the randomisation)",
            "Levels": {site["arm_labels"][arm]: _ARM_TEXT[arm] for arm in _site_arms(site)},
        }
    return sidecar


def _score_sidecar(site: dict[str, Any]) -> dict[str, Any]:
    lo, hi = (int(v) for v in scale_range(site["scale"]))
    label = load_scales()["scales"][site["scale"]]["label"]
    return {
        "MeasurementToolMetadata": {"Description": label},
        "participant_id": {"Description": "Unique participant label"},
        "session_id": {"Description": "Session of the assessment (the site's own label)"},
        site["score_column"]: {
            "Description": f"{label} total score ({lo}-{hi}); n/a marks a missed assessment",
        },
    }


# --------------------------------------------------------------------------- ground truth


def _rounded_pmf(mean: np.ndarray, sd: float) -> np.ndarray:
    """P(clip(round(X), 0, 60) = k) for X ~ N(mean, sd), one row per mean, k = 0..60."""
    edges = np.arange(MADRS_MAX) + 0.5
    cdf = norm.cdf((edges[None, :] - np.asarray(mean, dtype=float)[:, None]) / sd)
    ones = np.ones((cdf.shape[0], 1))
    return np.diff(np.hstack([0 * ones, cdf, ones]), axis=1)


def arm_rates(clinical: dict[str, Any], arm: str, site: dict[str, Any]) -> tuple[float, float]:
    """Population response and remission probability of ``arm`` at ``site``, computed exactly.

    Sums over the integer baseline and post grid, with the rounding and clipping of the model
    and, for a HAM-D-17 site, the round trip through the written HAM-D-17 integer.

    Returns
    -------
    (response, remission)
        Response: MADRS reduction of at least 50 % (baseline above 0). Remission: post MADRS at
        or below ``clinical['remission_threshold']``.
    """
    grid = np.arange(MADRS_MAX + 1, dtype=float)
    b = clinical["baseline"]["trd"]
    c = clinical["change"][arm]
    p_base = _rounded_pmf(np.asarray([b["mean"]]), b["sd"])[0]
    p_post = _rounded_pmf(grid + c["mean"], c["sd"])  # rows: baseline value
    seen = observed_madrs(site, grid)
    fb, fp = seen[:, None], seen[None, :]
    response = (fb > 0) & (fb - fp >= 0.5 * fb - 1e-9)
    remission = np.broadcast_to(fp <= clinical["remission_threshold"] + 1e-9, response.shape)
    joint = p_base[:, None] * p_post
    return float((joint * response).sum()), float((joint * remission).sum())


def analysis_options(scenario: dict[str, Any]) -> dict[str, Any]:
    """The workflow options the clinical truths assume (the remission rule)."""
    if not any(
        _site_arms(s) for s in scenario["sites"] if s["species"] == "human" and s.get("groups")
    ):
        return {}
    return {"clinical": {"remission_threshold": scenario["clinical"]["remission_threshold"]}}


def truth(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """Planted clinical truths of the pooled randomised arms.

    Rates pool the sites holding an arm, weighted by the arm's size at each site. All values
    are in MADRS(-equivalent) units whatever scale the sites write.
    """
    clinical = scenario["clinical"]
    weights: dict[str, list[tuple[dict[str, Any], int]]] = {arm: [] for arm in ARM_ORDER}
    for site in scenario["sites"]:
        if site["species"] != "human" or not site.get("groups"):
            continue
        for arm, n in _site_arms(site).items():
            weights[arm].append((site, n))
    present = [arm for arm in ARM_ORDER if weights[arm]]
    entries: list[dict[str, Any]] = []
    rates: dict[str, tuple[float, float]] = {}

    def entry(term: str, arm: str | None, value: float, unit: str) -> dict[str, Any]:
        return {
            "analysis": ANALYSIS,
            "term": term,
            "arm": arm,
            "value": round(float(value), 12) + 0.0,
            "unit": unit,
        }

    for arm in present:
        total = sum(n for _, n in weights[arm])
        resp = sum(n * arm_rates(clinical, arm, site)[0] for site, n in weights[arm]) / total
        remi = sum(n * arm_rates(clinical, arm, site)[1] for site, n in weights[arm]) / total
        rates[arm] = (resp, remi)
        entries.append(entry("change", arm, clinical["change"][arm]["mean"], "MADRS points"))
        entries.append(entry("response_rate", arm, resp, "proportion"))
        entries.append(entry("remission_rate", arm, remi, "proportion"))
    if len(present) == 2:
        k, p = "ketamine", "placebo"
        diff = clinical["change"][k]["mean"] - clinical["change"][p]["mean"]
        entries.append(entry("arm_difference", None, diff, "MADRS points"))
        entries.append(entry("response_difference", None, rates[k][0] - rates[p][0], "proportion"))
        entries.append(entry("remission_difference", None, rates[k][1] - rates[p][1], "proportion"))
    return entries
