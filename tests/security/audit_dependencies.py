"""`make security`'s dependency scan: pip-audit over the installed environment, and a clear failure
when the scan could not run.

pip-audit asks PyPI's advisory data for each installed release (`/pypi/<name>/<version>/json`).
Where that endpoint does not answer (the registry mirror of this workplace serves only the project
pages, `/pypi/<name>/json`, whose `vulnerabilities` are those of the latest release), pip-audit
skips the package and would still print "No known vulnerabilities found". So for each package it
skipped we read the project page ourselves: a package installed at its latest release is checked
against the same advisories; one installed below its latest cannot be checked from here and fails
the scan, unless `[tool.cipherstream.audit] unaudited` in pyproject.toml names it with the reason.
Accepted advisories are `[tool.cipherstream.audit] ignore`, each id with its reason. What is
audited is this project's own requirements (`.[dev,embedded,postgres]`) and theirs, as installed:
not whatever else shares the environment.

Run: `python -m tests.security.audit_dependencies` (exit 0: every package audited, no advisory).
"""
from __future__ import annotations

import json
import re
import subprocess  # nosec B404  # runs pip-audit, this interpreter's own module
import sys
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PAGE = "https://pypi.org/pypi/{name}/json"
PROJECT = "cipherstream"
EXTRAS = ("dev", "embedded", "postgres")


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    problem: str  # an advisory id with its summary, or why the package could not be audited


def audit_settings(pyproject: Path = REPO_ROOT / "pyproject.toml") -> tuple[dict[str, str], dict[str, str]]:
    """The accepted advisories and the accepted unaudited packages, each with its reason."""
    section = tomllib.loads(pyproject.read_text()).get("tool", {}).get("cipherstream", {}).get("audit", {})
    return dict(section.get("ignore", {})), {canonicalize_name(name): why for name, why in section.get("unaudited", {}).items()}


def installed() -> dict[str, str]:
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


def project_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml", extras: tuple[str, ...] = EXTRAS) -> list[str]:
    """This checkout's own requirements (not the installed metadata, which may be another checkout's)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *(line for extra in extras for line in project["optional-dependencies"].get(extra, []))]


def requirement_closure(roots: list[str] | None = None) -> set[str]:
    """The installed packages the project needs, with their own requirements, recursively."""
    needed: set[str] = set()
    todo: list[tuple[list[str], tuple[str, ...]]] = [(project_requirements() if roots is None else roots, ())]
    while todo:
        requires, wanted_extras = todo.pop()
        for line in requires:
            requirement = Requirement(line)
            marker_ok = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in (*wanted_extras, ""))
            child = canonicalize_name(requirement.name)
            if marker_ok and child not in needed:
                needed.add(child)
                try:
                    todo.append((metadata.requires(child) or [], tuple(requirement.extras)))
                except metadata.PackageNotFoundError:
                    continue  # not installed: pip-audit cannot see it either; `make install` puts it there
    return needed


def run_pip_audit(ignored: dict[str, str]) -> dict:  # type: ignore[type-arg]
    command = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--format", "json"]
    for advisory in ignored:
        command += ["--ignore-vuln", advisory]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)  # nosec B603  # fixed arguments
    if not done.stdout.strip():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"dependency audit FAILED: pip-audit could not read PyPI's advisory data (exit {done.returncode}): {last}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def project_page(name: str, timeout_s: float = 30.0) -> dict | None:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(PROJECT_PAGE.format(name=name), timeout=timeout_s) as answer:  # nosec B310  # https, fixed host
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def latest_for_this_python(page: dict) -> str:  # type: ignore[type-arg]
    """The newest final release with a file this Python may install (numpy's newest may need 3.12).

    >>> latest_for_this_python({"info": {"version": "9"}, "releases": {"1.0": [{"requires_python": ">=3.8", "yanked": False}],
    ...     "9": [{"requires_python": ">=3.99", "yanked": False}], "2.0rc1": [{"requires_python": None, "yanked": False}]}})
    '1.0'
    """
    here = ".".join(map(str, sys.version_info[:3]))
    candidates = []
    for version, files in (page.get("releases") or {}).items():
        try:
            parsed = Version(version)
        except InvalidVersion:
            continue
        if parsed.is_prerelease or not any(
                not file.get("yanked") and (not file.get("requires_python")
                                            or SpecifierSet(re.sub(r"\.\*$", "", file["requires_python"])).contains(here))
                for file in files):
            continue
        candidates.append(parsed)
    return str(max(candidates)) if candidates else page["info"]["version"]


def check_skipped(name: str, version: str, page: dict | None, ignored: dict[str, str]) -> list[Finding]:  # type: ignore[type-arg]
    """Findings for a package pip-audit skipped, from its project page (whose advisories are those
    of the latest release).

    >>> page = {"info": {"version": "2.0"}, "vulnerabilities": [{"id": "PYSEC-1", "summary": "bad", "withdrawn": None}]}
    >>> check_skipped("p", "2.0", page, {})
    [Finding(package='p', version='2.0', problem='PYSEC-1: bad')]
    >>> check_skipped("p", "2.0", page, {"PYSEC-1": "not reachable from our code"})
    []
    >>> check_skipped("p", "1.0", page, {})[0].problem
    'installed 1.0 is below the latest 2.0: its advisories cannot be read here'
    """
    if page is None:
        return [Finding(name, version, "not on PyPI: cannot be audited")]
    latest = page["info"]["version"]
    try:
        at_latest = Version(version) >= Version(latest)
    except InvalidVersion:
        at_latest = version == latest
    if not at_latest:
        installable = latest_for_this_python(page) if page.get("releases") else latest
        why = "" if installable == latest or Version(version) < Version(installable) else \
            f" (the newest for this Python; {latest} needs another)"
        return [Finding(name, version, f"installed {version} is below the latest {latest}{why}: its advisories cannot be read here")]
    return [Finding(name, version, f"{advisory['id']}: {advisory.get('summary') or advisory.get('details', '')[:120]}")
            for advisory in page.get("vulnerabilities") or []
            if not advisory.get("withdrawn") and advisory["id"] not in ignored
            and not set(advisory.get("aliases") or []) & set(ignored)]


def main() -> int:
    ignored, unaudited = audit_settings()
    versions = installed()
    needed = requirement_closure()
    missing = sorted(name for name in needed if name not in versions)
    if missing:
        print(f"dependency audit FAILED: required but not installed: {', '.join(missing)} (make install)")
        return 2
    report = run_pip_audit(ignored)
    report["dependencies"] = [dependency for dependency in report["dependencies"] if canonicalize_name(dependency["name"]) in needed]
    findings: list[Finding] = []
    skipped: list[str] = []
    for dependency in report["dependencies"]:
        name = canonicalize_name(dependency["name"])
        if "skip_reason" in dependency:
            skipped.append(name)
            continue
        findings += [Finding(name, dependency["version"], f"{vuln['id']}: fixed in {', '.join(vuln['fix_versions']) or 'no release'}")
                     for vuln in dependency["vulns"]]
    audited_by_pip_audit = len(report["dependencies"]) - len(skipped)
    if skipped:
        try:
            probe = project_page("pip")
        except (urllib.error.URLError, TimeoutError) as error:
            print(f"dependency audit FAILED: PyPI's advisory data cannot be reached ({error}); "
                  f"{len(skipped)} packages were not audited. Run `make security` where https://pypi.org answers.")
            return 2
        if probe is None:
            print("dependency audit FAILED: PyPI answers but has no project page for pip; no advisory data.")
            return 2
    with ThreadPoolExecutor(max_workers=8) as pool:  # one page per package: 8 at a time
        pages = dict(zip(skipped, pool.map(project_page, skipped)))
    for name in skipped:
        found = check_skipped(name, versions.get(name, "?"), pages[name], ignored)
        if name in unaudited and all("cannot" in finding.problem for finding in found):
            continue
        findings += found
    print(f"dependency audit: {len(report['dependencies'])} packages of {PROJECT}[{','.join(EXTRAS)}], "
          f"{audited_by_pip_audit} by pip-audit's per-release data, "
          f"{len(skipped)} from their project pages; accepted advisories {sorted(ignored) or 'none'}, "
          f"accepted unaudited {sorted(unaudited) or 'none'}")
    for finding in findings:
        print(f"  {finding.package} {finding.version}: {finding.problem}")
    print("dependency audit FAILED" if findings else "dependency audit: no known vulnerability")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
