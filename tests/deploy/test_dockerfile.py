"""The services image, read from the Dockerfile as Docker parses it (dockerfile-parse; no Docker daemon
is usable here): pinned bases, a build stage apart from a non-root final stage, no ADD, the project
without dev extras, and the paths, uid and port the Helm chart relies on."""
from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.render import REPO, render

# python:<major>.<minor>.<patch>-slim[-<debian release>], optionally @sha256:<digest>: never a floating tag.
PINNED_PYTHON_BASE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")
Instruction = dict[str, Any]


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(REPO / "Dockerfile"))


def _stages(dockerfile: DockerfileParser) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _final_deployment(service: str = "ingest") -> dict[str, Any]:
    [deployment] = [d for d in render("bank") if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(service)]
    return deployment


def test_every_base_image_is_a_pinned_python_slim(dockerfile: DockerfileParser) -> None:
    bases = [image for image in dockerfile.parent_images if image != "build"]
    assert bases and all(PINNED_PYTHON_BASE.match(image) for image in bases), bases
    assert len(set(bases)) == 1, "build and run stages share one base so compiled wheels match its libc"


def test_build_and_run_stages_are_apart_and_the_run_stage_is_non_root(dockerfile: DockerfileParser) -> None:
    assert dockerfile.is_multistage
    *_, final = _stages(dockerfile)
    users = [instruction for instruction in final if instruction["instruction"] == "USER"]
    assert users, "the final stage must name its user"
    user, _, group = users[-1]["value"].partition(":")
    assert user not in ("", "0", "root") and group not in ("0", "root")
    after_user = final[final.index(users[-1]):]
    assert not [i for i in after_user if i["instruction"] in ("RUN", "COPY", "ADD")], "nothing runs as root after USER"
    # The final stage installs nothing: no compilers, no package manager runs, only the built venv is copied in.
    assert not [i for i in final if i["instruction"] == "RUN" and re.search(r"\b(pip|apt-get|apk|gcc|make)\b", i["value"])]
    assert any(i["instruction"] == "COPY" and i["value"].startswith("--from=build ") for i in final)


def test_no_add_and_no_url_downloads(dockerfile: DockerfileParser) -> None:
    instructions = dockerfile.structure
    assert not [i for i in instructions if i["instruction"] == "ADD"], "COPY only: ADD fetches URLs and unpacks archives"
    assert not [i for i in instructions if i["instruction"] == "RUN" and re.search(r"\b(curl|wget)\b|https?://", i["value"])]


def test_the_project_is_installed_without_dev_extras(dockerfile: DockerfileParser) -> None:
    installs = [i["value"] for i in dockerfile.structure if i["instruction"] == "RUN" and "pip install" in i["value"]]
    assert installs and all("dev" not in shlex.split(command)[-1] for command in installs), installs
    assert any(re.search(r"pip install '?\.(\[[a-z,]+\])?'?$", command) for command in installs)


def test_the_image_writes_only_under_tmp_and_finds_its_files(dockerfile: DockerfileParser) -> None:
    envs = dockerfile.envs
    assert envs["PYTHONDONTWRITEBYTECODE"] == "1"
    assert envs["HOME"].startswith("/tmp") and envs["CIPHERSTREAM_DATA_DIR"].startswith("/tmp/")
    *_, final = _stages(dockerfile)
    workdirs = [i["value"] for i in final if i["instruction"] == "WORKDIR"]
    assert workdirs[-1] == "/tmp"  # relative paths (the SQLite default) land in the emptyDir
    copied_to = {shlex.split(i["value"])[-1] for i in final if i["instruction"] == "COPY"}
    assert {envs["CIPHERSTREAM_SCHEMA_DIR"], envs["CIPHERSTREAM_CAMPAIGNS_FILE"]} <= copied_to
    pod = _final_deployment()["spec"]["template"]["spec"]
    tmp_volume = next(m["name"] for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp")
    assert any(v["name"] == tmp_volume and "emptyDir" in v for v in pod["volumes"])


def test_the_chart_runs_the_image_as_its_user_on_its_port(dockerfile: DockerfileParser) -> None:
    *_, final = _stages(dockerfile)
    user, _, group = [i["value"] for i in final if i["instruction"] == "USER"][-1].partition(":")
    exposed = {int(port.split("/")[0]) for i in final if i["instruction"] == "EXPOSE" for port in i["value"].split()}
    deployment = _final_deployment()
    pod = deployment["spec"]["template"]["spec"]
    assert (str(pod["securityContext"]["runAsUser"]), str(pod["securityContext"]["runAsGroup"])) == (user, group)
    assert {port["containerPort"] for port in pod["containers"][0]["ports"]} == exposed
    entrypoint = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"][-1]
    assert entrypoint == '["python", "-m"]'  # the chart's args are `services.<name>.app worker`


def test_the_build_context_holds_only_what_is_copied(dockerfile: DockerfileParser) -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list: nothing enters the context unless named"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    sources = [part for i in dockerfile.structure if i["instruction"] == "COPY" and "--from=" not in i["value"]
               for part in shlex.split(i["value"])[:-1] if not part.startswith("--")]
    assert sources and all(source.split("/")[0] in allowed for source in sources), (sources, allowed)
    assert all((REPO / source).exists() for source in sources)
