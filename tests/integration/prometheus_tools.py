"""A real Prometheus server for tests (Debian's `prometheus`), and reading workers' /metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_tools import free_port


class Prometheus:
    """`prometheus` scraping ``targets`` (host:port of /metrics) every second, data in tmp."""

    def __init__(self, targets: Sequence[str], workdir: Path) -> None:
        self.binary = shutil.which("prometheus")
        if self.binary is None:
            raise AssertionError("prometheus is not installed: run scripts/bootstrap.sh "
                                 "(apt-get install prometheus)")
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        self.config.write_text(scrape_config(targets))
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout_s: float = 30.0) -> "Prometheus":
        log = open(self.workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_text()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout_s}s:\n{self.log_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, promql: str) -> List[Tuple[Dict[str, str], float]]:
        """An instant query: (labels, value) of each series of the result."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def scalar(self, promql: str) -> Optional[float]:
        """The value of a query with one series (None when it has none)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return result[0][1] if result else None

    def targets_up(self) -> int:
        return int(self.scalar("sum(up)") or 0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def scrape_config(targets: Sequence[str]) -> str:
    """A Prometheus config scraping the workers' /metrics every second (JSON is YAML)."""
    return json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "weir", "metrics_path": "/metrics",
                            "static_configs": [{"targets": list(targets)}]}],
    }, indent=2)


def scrape(port: int) -> Dict[str, List[Tuple[Dict[str, str], float]]]:
    """A worker's /metrics parsed: sample name -> [(labels, value)]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples: Dict[str, List[Tuple[Dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
