"""The sample deployment files (deploy/) are valid, not just written: Kubernetes manifests against
the Kubernetes JSON schemas (``kubernetes-validate``, strict: unknown fields are errors), systemd
units with ``systemd-analyze verify``, and every ``outlast`` command line in them against the CLI."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from typer.main import get_command

from outlast.api import create_app

ROOT = Path(__file__).resolve().parents[1]
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
#: The newest schemas the package ships, and an older release still in wide use.
VERSIONS = ["1.37.0", "1.29.0"]


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def test_the_files_exist() -> None:
    assert {p.name for p in K8S} >= {"api.yaml", "worker.yaml", "secret.yaml", "ingress.yaml"}
    assert {p.name for p in UNITS} == {"outlast-api.service", "outlast-worker@.service"}


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    for name, doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field
        assert doc["metadata"]["name"], name


def test_the_schema_check_catches_a_typo() -> None:
    """The negative control: strict validation refuses a misspelt field."""
    deployment = copy.deepcopy(by_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["comand"] = ["outlast"]
    with pytest.raises(kubernetes_validate.ValidationError, match="comand"):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def outlast_command(words: list[str]) -> click.Context:
    """Parse an ``outlast …`` command line as the CLI would (unknown options raise)."""
    from outlast.cli import api, compute, llm  # noqa: F401  (register their commands)
    from outlast.cli.main import app

    api.register(app)
    group = get_command(app)
    assert words[0].endswith("outlast"), words
    root = group.make_context("outlast", words[1:2], resilient_parsing=False)
    command = group.get_command(root, words[1])  # type: ignore[attr-defined]
    assert command is not None, f"no command {words[1]!r}"
    return command.make_context(words[1], words[2:], parent=root)


def containers() -> list[dict[str, Any]]:
    return [c for doc in by_kind("Deployment") for c in doc["spec"]["template"]["spec"]["containers"]]


def test_commands_in_manifests_and_units_are_valid_cli_lines() -> None:
    lines = [c["command"] for c in containers()]
    for unit in UNITS:
        (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit.read_text(), re.M)
        lines.append(shlex.split(exec_start.replace("%i", "v1")))
    assert len(lines) == 4
    for words in lines:
        ctx = outlast_command(words)
        assert ctx.params is not None


def test_workers_get_longer_to_stop_than_they_drain() -> None:
    for doc in by_kind("Deployment"):
        spec = doc["spec"]["template"]["spec"]
        for container in spec["containers"]:
            ctx = outlast_command(container["command"])
            if container["command"][1] == "worker":
                assert spec["terminationGracePeriodSeconds"] > ctx.params["drain_timeout"]
                env = {e["name"]: e.get("value") for e in container["env"]}
                assert env["OUTLAST_VERSION"] == doc["metadata"]["labels"]["app.kubernetes.io/version"]
    unit = (ROOT / "deploy" / "systemd" / "outlast-worker@.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    drain = outlast_command(shlex.split(exec_start)).params["drain_timeout"]
    assert int(re.findall(r"^TimeoutStopSec=(\d+)$", unit, re.M)[0]) > drain


def test_manifests_refer_to_what_exists() -> None:
    """Secret keys, the probe path, the Service behind the Ingress."""
    (secret,) = by_kind("Secret")
    for container in containers():
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"]
    paths = {getattr(route, "path", None) for route in create_app("redis://127.0.0.1:1/0").routes}
    for container in containers():
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["path"] in paths
    services = {doc["metadata"]["name"] for doc in by_kind("Service")}
    for ingress in by_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] in services
        assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing: CI must install Debian's `systemd` package")
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    # The units name where an operator installs things; point them at this checkout's instead
    # (verify checks that ExecStart's program exists and is executable).
    outlast = Path(sys.executable).with_name("outlast")
    assert outlast.exists()
    names = []
    for unit in UNITS:
        text = unit.read_text().replace("/srv/outlast/venv/bin/outlast", str(outlast))
        text = re.sub(r"^WorkingDirectory=.*$", f"WorkingDirectory={tmp_path}", text, flags=re.M)
        name = unit.name.replace("@.service", "@v1.service")  # a template is verified as an instance
        (tmp_path / name).write_text(text)
        if name != unit.name:
            (tmp_path / unit.name).write_text(text)
        names.append(str(tmp_path / name))
    done = subprocess.run([analyze, "verify", *names], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    # The negative control: a misspelt key is reported (on stderr; the exit code stays 0).
    bad = tmp_path / "bad.service"
    bad.write_text(
        (tmp_path / "outlast-api.service").read_text().replace("TimeoutStopSec", "TimeoutStopSecs")
    )
    done = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'TimeoutStopSecs'" in done.stderr
