"""The deployment checks' own tools (checkov, the Prometheus operator's CRD models) live in
.venv-tools, apart from the project's venv: checkov pins many packages of its own and must not
move the project's. Made on first use from tools-requirements.txt; later runs reuse it unless that
file changed (a stamp holds the installed copy).

Run `python -m tests.deploy.tools` to make it ahead of the tests.
"""
from __future__ import annotations

import fcntl
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".venv-tools"
REQUIREMENTS = Path(__file__).with_name("tools-requirements.txt")
STAMP = TOOLS / ".installed-requirements.txt"
LOCK = TOOLS / ".install.lock"


def tools_bin(name: str) -> Path:
    """Path of an executable in the tools venv, installing the tools first if they are missing or stale."""
    ensure_tools()
    return TOOLS / "bin" / name


def ensure_tools() -> None:
    wanted = REQUIREMENTS.read_text()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    # Two test runs starting on a clean machine at once: one installs, the other waits for it.
    TOOLS.mkdir(exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text() == wanted:
            return
        if not (TOOLS / "bin" / "python").exists():
            venv.create(TOOLS, with_pip=True)
        subprocess.run([str(TOOLS / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(REQUIREMENTS)], check=True)
        # Written last: an interrupted install leaves no stamp and is redone next time.
        STAMP.write_text(wanted)


if __name__ == "__main__":
    ensure_tools()
    sys.stdout.write(f"tools ready in {TOOLS}\n")
