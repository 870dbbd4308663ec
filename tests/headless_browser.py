"""A real browser for the report tests: Debian's chromium, headless.

Snakemake's report is a single-page app (React): the figures and captions exist only after its
JavaScript ran. ``show`` opens a copy of the report with a few lines appended that do what a
reader does (open a result's info panel, click its eye button) and, once the browser has decoded
the image, write its size into the page; chromium then dumps the rendered DOM and a screenshot.
The app has no URL routing, so the result to show is passed as the URL's fragment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "chromium"
WINDOW = (1600, 1000)

# What a reader does, in the report's own API (the one its caption links call): open the result's
# info panel (caption included), click its eye button, wait until the image is decoded.
NAVIGATE = """
(function () {
  const path = decodeURIComponent(location.hash.slice(1));
  const mark = (key, value) => { document.body.dataset[key] = value; };
  // No CSS transitions (the navbar animates its width): virtual time runs the page's timers
  // ahead of the animations, so the layout measured below would not be the one captured.
  const still = document.createElement("style");
  still.textContent = "*, *::before, *::after { transition: none !important; animation: none !important; }";
  document.head.appendChild(still);
  function until(condition, then, tries) {
    let value;
    try { value = condition(); } catch (error) { mark("error", String(error)); return; }
    if (value) { then(value); }
    else if (tries > 0) { setTimeout(() => until(condition, then, tries - 1), 100); }
    else { mark("error", "timed out waiting for " + condition); }
  }
  until(() => typeof app !== "undefined" && app, (report) => {
    report.showResultInfo(path);
    until(() => document.querySelector("nav table a"), (eye) => {
      eye.click();
      until(() => {
        const img = document.querySelector("#app > div > div:last-child img");
        return img && img.complete && img.naturalWidth > 0 && img;
      }, (img) => {
        const nav = document.querySelector("nav").getBoundingClientRect();
        mark("figure", [img.naturalWidth, img.naturalHeight].join("x"));
        mark("navRight", String(Math.ceil(nav.right)));
      }, 50);
    }, 50);
  }, 50);
})();
"""


class BrowserUnavailableError(Exception):
    """No chromium here, and apt-get cannot install it (not root, no apt-get, no package source)."""


def install() -> str:
    """The chromium binary; installed with apt-get when missing (needs root)."""
    found = shutil.which(PACKAGE)
    if found:
        return found
    if os.geteuid() != 0:
        raise BrowserUnavailableError(
            f"chromium is not installed and apt-get needs root (uid {os.geteuid()}): "
            f"install Debian's {PACKAGE} package"
        )
    if shutil.which("apt-get") is None:
        raise BrowserUnavailableError("chromium is not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "-q", "-y", "install", "--no-install-recommends", PACKAGE]
    proc = subprocess.run(install_cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # a stale package list: update once, then install again
        update = subprocess.run(
            ["apt-get", "-q", "update"], env=env, capture_output=True, text=True, check=False
        )
        if update.returncode != 0:
            raise BrowserUnavailableError(
                f"chromium is not installed and apt's package sources are unreachable:\n"
                f"{update.stderr[-1500:]}"
            )
        proc = subprocess.run(install_cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"apt-get install {PACKAGE} failed:\n{proc.stderr[-3000:]}")
    found = shutil.which(PACKAGE)
    if not found:
        raise RuntimeError(f"after apt-get install {PACKAGE}, no chromium on PATH")
    return found


@dataclass
class View:
    """What the browser showed for one result: the rendered DOM and a screenshot (PNG)."""

    dom: str
    screenshot: Path


def navigable_copy(report: Path, dest: Path) -> Path:
    """``report`` with the navigation script appended (the report itself is left as it is)."""
    html = report.read_text(encoding="utf-8")
    end = html.rindex("</body>")
    dest.write_text(html[:end] + f"<script>{NAVIGATE}</script>\n" + html[end:], encoding="utf-8")
    return dest


def show(
    chromium: str, page: Path, result: str, workdir: Path, window: tuple[int, int] = WINDOW
) -> View:
    """Open ``page`` (a navigable copy) at ``result`` in a ``window`` (width, height) and return
    the rendered DOM and a screenshot."""
    workdir.mkdir(parents=True, exist_ok=True)
    screenshot = workdir / "screenshot.png"
    url = page.resolve().as_uri() + "#" + urllib.parse.quote(result)
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={workdir / 'profile'}",
            f"--window-size={window[0]},{window[1]}",
            # run the page's timers in virtual time until it is idle, at most 20 s of page time
            "--virtual-time-budget=20000",
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0 or not screenshot.is_file():
        raise AssertionError(f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return View(dom=proc.stdout, screenshot=screenshot)
