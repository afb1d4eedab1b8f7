"""The container files: lint-clean, and running the same commands as the README and tests."""

import json
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


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _mounted(service, target):
    """The repo file or folder a service mounts at ``target``."""
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            assert source.startswith("./"), volume
            return ROOT / source
    raise AssertionError(f"nothing mounted at {target}")


def test_compose_prometheus_discovers_every_worker_replica_by_dns():
    prometheus = _compose()["services"]["prometheus"]
    config_path = _mounted(prometheus, "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load(config_path.read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == 6066
    assert "static_configs" not in job  # replicas come and go with --scale


def test_prometheus_config_passes_promtool():
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus (scripts/bootstrap.sh installs it)"
    proc = subprocess.run([promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_grafana_provisions_the_prometheus_datasource_and_the_dashboard():
    services = _compose()["services"]
    grafana = services["grafana"]
    provisioning = _mounted(grafana, "/etc/grafana/provisioning")
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "weir.yml").read_text())["providers"]
    dashboards = _mounted(grafana, provider["options"]["path"])
    dashboard = json.loads((dashboards / "weir.json").read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {source["uid"]}
    assert "prometheus" in services and "prometheus" in grafana["depends_on"]


def dashboard_queries():
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/weir.json").read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}


def test_dashboard_queries_only_metrics_that_app_metrics_defines():
    from app.metrics import METRIC_NAMES

    used = {name for exprs in dashboard_queries().values() for e in exprs
            for name in re.findall(r"\bweir_[a-z0-9_]+", e)}
    assert used and used <= METRIC_NAMES, used - METRIC_NAMES


def test_dashboard_shows_throughput_lag_late_events_dead_letters_alerts_and_watermarks():
    exprs = " ".join(e for es in dashboard_queries().values() for e in es)
    for metric in ("weir_events_consumed_total", "weir_consumer_lag_records",
                   "weir_late_events_total", "weir_dead_letters_total", "weir_fraud_alerts_total",
                   "weir_watermark_timestamp_seconds"):
        assert metric in exprs, metric
    assert "by (reason)" in exprs and "by (type)" in exprs
