"""Headless Chromium for the tests that check a page as a browser shows it: the DOM after
the page's own scripts ran (``--dump-dom``), with networking and every background service
off, so a page that reaches outside itself cannot pass by accident."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000")


def find_chromium() -> str | None:
    """The first Chromium found: /usr/bin/chromium, then the others on PATH."""
    for name in CANDIDATES:
        if os.path.isabs(name):
            if os.access(name, os.X_OK):
                return name
        elif (found := shutil.which(name)) is not None:
            return found
    return None


def render_dom(html_path: Path, timeout: float = 60) -> str:
    """The serialised DOM of ``html_path`` once loaded (virtual time lets the load handlers
    run before the dump)."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("chromium not installed (apt install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        # a throwaway profile and HOME: nothing of a previous run, nothing left behind
        env = {**os.environ, "HOME": profile}
        proc = subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
             Path(html_path).resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium exited {proc.returncode} without a DOM:\n"
                           f"{proc.stderr[-2000:]}")
    return proc.stdout
