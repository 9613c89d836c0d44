"""bandit finds nothing of medium or high severity in services and demo (as `make security` runs it),
and every finding accepted on a line says which check it silences and why."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from services.core.config import REPO_ROOT

_NOSEC = re.compile(r"#\s*nosec\b(?P<rest>.*)$")
_ACCEPTED = re.compile(r"^\s+B\d{3}(?:,\s*B\d{3})*\s+#\s+\S.{8,}$")  # `# nosec B310  # the reason`


def accepted_without_reason(roots: tuple[str, ...] = ("services", "demo", "tests"), base: Path = REPO_ROOT) -> list[str]:
    """Lines with a `# nosec` that names no check or gives no reason after a second `#`."""
    bad = []
    for root in roots:
        for path in sorted((base / root).rglob("*.py")):
            if path.resolve() == Path(__file__).resolve():  # this checker's own docstrings name the syntax
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                found = _NOSEC.search(line)
                if found and not _ACCEPTED.match(found.group("rest")):
                    bad.append(f"{path.relative_to(base)}:{number}: {line.strip()}")
    return bad


def test_bandit_finds_nothing_of_medium_or_high_severity() -> None:
    done = subprocess.run([sys.executable, "-m", "bandit", "-c", "pyproject.toml", "-q", "-r", "services", "demo",
                           "--severity-level", "medium", "-f", "custom", "--msg-template", "{relpath}:{line} {test_id} {msg}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_bandit_fails_on_a_medium_finding(tmp_path: Path) -> None:
    (tmp_path / "unsafe.py").write_text("def run(source):\n    return eval(source)\n")
    done = subprocess.run([sys.executable, "-m", "bandit", "-c", str(REPO_ROOT / "pyproject.toml"), "-q", "-r", str(tmp_path),
                           "--severity-level", "medium"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "B307" in done.stdout


def test_every_accepted_finding_names_its_check_and_its_reason(tmp_path: Path) -> None:
    assert accepted_without_reason() == []
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "a.py").write_text("x = eval(s)  # nosec B307  # the input is our own constant\n"
                                                "y = eval(s)  # nosec\nz = eval(s)  # nosec B307\n")
    assert accepted_without_reason(("services",), tmp_path) == ["services/a.py:2: y = eval(s)  # nosec",
                                                               "services/a.py:3: z = eval(s)  # nosec B307"]
