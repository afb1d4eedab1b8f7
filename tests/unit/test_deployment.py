"""The container files: lint-clean, and running the same commands as the README and tests."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from app.settings import SPECS

ROOT = Path(__file__).resolve().parents[2]
WORKER_COMMAND = ["worker", "-l", "info"]  # `weir worker -l info`, as in README and tests


def test_dockerfile_is_clean_under_hadolint():
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_runs_the_worker_command_as_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["weir"]' in text
    assert f"CMD {WORKER_COMMAND}".replace("'", '"') in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in text and 'VOLUME ["/data"]' in text


def test_compose_worker_runs_the_same_command_and_scales():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "topic-init", "worker"} <= set(services)
    worker = services["worker"]
    assert worker["command"] == WORKER_COMMAND
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N works
    assert worker["volumes"] == ["/data"]  # an anonymous data dir per replica
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_compose_sets_only_documented_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = {spec.env for spec in SPECS.values()}
    for name, service in compose["services"].items():
        if "build" in service:
            assert set(service["environment"]) <= known, name


def test_readme_documents_every_setting_and_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    for spec in SPECS.values():
        assert f"`{spec.env}`" in readme, spec.env
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
