"""Local single-node Apache Kafka broker (KRaft) for development and tests.

The broker jars are fetched from Maven Central with ``mvn`` (see
``kafka/pom.xml``, which pins the Kafka version) and the broker runs as a
detached ``java`` process bound to 127.0.0.1.

Layout of a broker home directory::

    <home>/lib/                 jars + .complete marker (holds the Kafka version)
    <home>/server.properties    rewritten on every start
    <home>/broker.pid           pid of the running broker
    <home>/maven.log            output of the last jar fetch
    <home>/data/kraft/          log.dirs (topics, metadata log)
    <home>/data/logs/           server.log (log4j2), stdout.log and gc.log (JVM)

Standard library only, so it can run before anything else is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

from tables.errors import WeirError


class BrokerError(WeirError):
    """The local Kafka broker could not be fetched, started or stopped."""


REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "kafka" / "log4j2.yaml"
HOST = "127.0.0.1"
MIN_JAVA = 17
# As Kafka's own start scripts: a heap of up to 1 GB, G1 aiming at 20 ms pauses. With 512 MB
# and G1's default 200 ms aim, the bench's broker ran concurrent cycles back to back and paused
# 10 to 20 ms every second or two (its gc.log); now about every 3 s. It starts at 256 MB (Kafka:
# 1 GB) so that the test suite's brokers stay small; the tools (format) get Kafka's 256 MB.
HEAP_OPTS = ["-Xms256m", "-Xmx1g"]
TOOL_HEAP_OPTS = ["-Xmx256m"]
GC_OPTS = ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
           "-XX:+ExplicitGCInvokesConcurrent"]
INSTALL_HINT = "install with e.g. `apt-get install openjdk-17-jre-headless maven`"

Progress = Callable[[str], object]


# ---------------------------------------------------------------- paths


def _lib(home: Path) -> Path:
    return Path(home).resolve() / "lib"


def _data(home: Path) -> Path:
    return Path(home).resolve() / "data"


def _pid_file(home: Path) -> Path:
    return Path(home).resolve() / "broker.pid"


def _props_file(home: Path) -> Path:
    return Path(home).resolve() / "server.properties"


def kafka_version() -> str:
    """Return the Kafka version pinned by ``kafka/pom.xml``."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{POM} has no <kafka.version> property")
    return node.text.strip()


# ---------------------------------------------------------------- tools


def _java_major(java: str) -> int:
    """Return the major version of the given ``java`` binary (8 for 1.8)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise BrokerError(f"cannot tell the Java version from `java -version`: {out.strip()!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_tools(need_maven: bool = True) -> None:
    """Raise BrokerError unless java >= 17 (and mvn, if asked) are on PATH."""
    missing = [t for t in (["java", "mvn"] if need_maven else ["java"]) if not shutil.which(t)]
    if missing:
        raise BrokerError(
            f"{' and '.join(missing)} not found on PATH; the local Kafka broker "
            f"needs Java {MIN_JAVA}+ and Maven: {INSTALL_HINT}"
        )
    major = _java_major(shutil.which("java"))
    if major < MIN_JAVA:
        raise BrokerError(
            f"`java` on PATH is Java {major}; Kafka {kafka_version()} needs Java "
            f"{MIN_JAVA}+: {INSTALL_HINT} (and select it with update-alternatives)"
        )


# ---------------------------------------------------------------- jars


def jars_ready(home: Path) -> bool:
    """True when ``<home>/lib`` holds a complete fetch of the pinned version."""
    marker = _lib(home) / ".complete"
    return marker.is_file() and marker.read_text().strip() == kafka_version()


def ensure_jars(home: Path, progress: Progress = print) -> Path:
    """Fetch the broker's runtime jars into ``<home>/lib`` unless already there.

    Runs ``mvn dependency:copy-dependencies`` on ``kafka/pom.xml``; a marker
    file with the Kafka version makes a later version change refetch.
    Returns the lib directory.
    """
    lib = _lib(home)
    if jars_ready(home):
        return lib
    check_tools(need_maven=True)
    version = kafka_version()
    if lib.exists():
        shutil.rmtree(lib)  # never mix jars of two versions on one classpath
    lib.mkdir(parents=True)
    cmd = ["mvn", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={lib}",
           "-DincludeScope=runtime", "-f", str(POM)]
    progress(f"Fetching Kafka {version} jars with Maven into {lib} ...")
    started = time.monotonic()
    try:
        downloaded = _run_maven(cmd, Path(home) / "maven.log", progress)
    except BrokerError:
        shutil.rmtree(lib, ignore_errors=True)
        raise
    jars = len(list(lib.glob("*.jar")))
    (lib / ".complete").write_text(version + "\n")
    progress(f"Fetched {jars} jars for Kafka {version} in {time.monotonic() - started:.1f}s "
             f"({downloaded} artifacts downloaded, the rest from ~/.m2)")
    return lib


def _run_maven(cmd: list[str], log_path: Path, progress: Progress) -> int:
    """Run Maven, log its output to ``log_path``, report progress every 2 s.

    Returns how many artifacts Maven downloaded.
    """
    downloaded = 0
    last_report = time.monotonic()
    tail: list[str] = []
    with open(log_path, "w") as log, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-40:]
            downloaded += line.startswith("Downloaded from") or "] Downloaded from" in line
            now = time.monotonic()
            if now - last_report >= 2.0:
                last_report = now
                progress(f"  maven: downloaded {downloaded} artifacts ...")
        code = proc.wait()
    if code != 0:
        raise BrokerError(
            f"Maven failed (exit {code}) fetching the Kafka jars; full log in {log_path}:\n"
            + "\n".join(tail)
        )
    return downloaded


# ---------------------------------------------------------------- wire check


def api_versions(port: int, host: str = HOST, timeout: float = 2.0) -> dict[int, tuple[int, int]]:
    """Send a Kafka ApiVersions v0 request; return {api_key: (min, max)}.

    Raises OSError when nothing answers or the answer is not a valid reply.
    """
    client_id = b"weir-broker-check"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        reply = _recv_exact(sock, size)
    corr, error, count = struct.unpack_from(">ihi", reply)
    if corr != 7 or error != 0 or count < 0:
        raise OSError(f"unexpected ApiVersions reply (correlation {corr}, error {error})")
    return {k: (lo, hi) for k, lo, hi in struct.iter_unpack(">hhh", reply[10:10 + 6 * count])}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by peer")
        buf += chunk
    return buf


def _healthy(port: int) -> bool:
    """True when a Kafka broker answers ApiVersions (incl. Metadata) on ``port``."""
    try:
        return 3 in api_versions(port)
    except (OSError, struct.error):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- process


def _read_pid(home: Path) -> int | None:
    try:
        return int(_pid_file(home).read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (reaps our own child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own exited child: reap it
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux) or the process just went away
    return state not in ("Z", "X")


def _is_our_broker(pid: int, home: Path) -> bool:
    """Guard against a reused pid: does ``pid`` run kafka.Kafka with our config?

    An unreadable or empty cmdline (seen transiently while a JVM starts) is
    given the benefit of the doubt.
    """
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    if not cmdline.strip(b"\0"):
        return True
    return b"kafka.Kafka" in cmdline and str(_props_file(home)).encode() in cmdline


def running_pid(home: Path) -> int | None:
    """Pid of this home's broker process if it is alive, else None."""
    pid = _read_pid(home)
    return pid if pid is not None and _is_our_broker(pid, home) else None


def _configured_ports(home: Path) -> tuple[int, int] | None:
    """(port, controller_port) from the last written server.properties."""
    try:
        text = _props_file(home).read_text()
    except OSError:
        return None
    found = dict(re.findall(r"(?<![A-Z_])(PLAINTEXT|CONTROLLER)://[^:,]+:(\d+)", text))
    if "PLAINTEXT" not in found or "CONTROLLER" not in found:
        return None
    return int(found["PLAINTEXT"]), int(found["CONTROLLER"])


def _java_cmd(home: Path, main: str, *args: str) -> list[str]:
    logs = _data(home) / "logs"
    if main == "kafka.Kafka":  # the broker, with its pauses logged (quoted: a path may hold ':')
        jvm = [*HEAP_OPTS, *GC_OPTS, f'-Xlog:gc:file="{logs}/gc.log":time:filecount=2,filesize=10M']
    else:
        jvm = [*TOOL_HEAP_OPTS, *GC_OPTS]
    return ["java", *jvm, "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={logs}",
            "-cp", str(_lib(home) / "*"), main, *args]


# ---------------------------------------------------------------- config


def _sasl_properties(port: int, users: dict[str, str]) -> dict[str, str]:
    """A SASL_PLAINTEXT listener on ``port`` accepting PLAIN logins of ``users`` (name: password)."""
    logins = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    return {
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {logins};",
    }


def _ssl_properties(keystore_pem: Path) -> dict[str, str]:
    """The SSL listener's key and certificate chain from one PEM file (PKCS#8 key, no password)."""
    return {"listener.name.ssl.ssl.keystore.type": "PEM",
            "listener.name.ssl.ssl.keystore.location": str(keystore_pem)}


def _write_properties(home: Path, port: int, controller_port: int,
                      sasl_port: int | None = None, sasl_users: dict[str, str] | None = None,
                      ssl_port: int | None = None, ssl_keystore_pem: Path | None = None) -> Path:
    """Write ``<home>/server.properties`` for a combined broker+controller node (with a
    SASL_PLAINTEXT listener on ``sasl_port`` and an SSL one on ``ssl_port`` when given)."""
    props = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(_data(home) / "kraft"),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
        # aiokafka speaks Produce <= v8, which KIP-890's verification answers with a
        # retriable NotEnoughReplicas, adding ~100 ms to every transactional send.
        "transaction.partition.verification.enable": "false",
    }
    if sasl_port is not None:
        props["listeners"] += f",SASL_PLAINTEXT://{HOST}:{sasl_port}"
        props["advertised.listeners"] += f",SASL_PLAINTEXT://{HOST}:{sasl_port}"
        props["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
        props.update(_sasl_properties(sasl_port, sasl_users or {}))
    if ssl_port is not None and ssl_keystore_pem is not None:
        props["listeners"] += f",SSL://{HOST}:{ssl_port}"
        props["advertised.listeners"] += f",SSL://{HOST}:{ssl_port}"
        props["listener.security.protocol.map"] += ",SSL:SSL"
        props.update(_ssl_properties(ssl_keystore_pem))
    path = _props_file(home)
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def _format_storage(home: Path) -> None:
    """Format the KRaft log dir once, with a fresh random cluster id."""
    if (_data(home) / "kraft" / "meta.properties").exists():
        return
    tool = "kafka.tools.StorageTool"
    run = subprocess.run(_java_cmd(home, tool, "random-uuid"), capture_output=True, text=True)
    cluster_id = run.stdout.strip().splitlines()[-1] if run.returncode == 0 and run.stdout.strip() else ""
    if not cluster_id:
        raise BrokerError(f"{tool} random-uuid failed: {(run.stderr or run.stdout).strip()[-2000:]}")
    run = subprocess.run(
        _java_cmd(home, tool, "format", "-t", cluster_id, "-c", str(_props_file(home))),
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        raise BrokerError(f"formatting {_data(home) / 'kraft'} failed: {(run.stderr or run.stdout).strip()[-2000:]}")


# ---------------------------------------------------------------- public API


def start(home: Path, port: int = 9092, controller_port: int = 9093, wait_s: float = 60,
          sasl_port: int | None = None, sasl_users: dict[str, str] | None = None,
          ssl_port: int | None = None, ssl_keystore_pem: Path | None = None) -> int:
    """Start the broker for ``home`` (fetching jars if needed); return its pid.

    With ``sasl_port``, the broker also listens there with SASL_PLAINTEXT and
    accepts PLAIN logins of ``sasl_users`` (name -> password); with ``ssl_port``,
    with TLS, presenting the key and certificates of ``ssl_keystore_pem``. Tests
    use them.

    Reuses a healthy broker already running from this home. Raises BrokerError
    when a port is taken by something else or the broker does not become
    ready within ``wait_s`` seconds.
    """
    home = Path(home).resolve()
    pid = running_pid(home)
    if pid is not None:
        return _reuse(home, pid, port, controller_port, wait_s)
    wanted = [(port, "port"), (controller_port, "controller_port")]
    if sasl_port is not None:
        wanted.append((sasl_port, "sasl_port"))
    if ssl_port is not None:
        wanted.append((ssl_port, "ssl_port"))
    for value, name in wanted:
        if not _port_free(value):
            raise BrokerError(
                f"{name}={value} on {HOST} is already in use by another process; "
                f"stop it or choose another {name} for the local Kafka broker"
            )
    ensure_jars(home)
    check_tools(need_maven=False)
    (_data(home) / "logs").mkdir(parents=True, exist_ok=True)
    _write_properties(home, port, controller_port, sasl_port, sasl_users, ssl_port,
                      ssl_keystore_pem)
    _format_storage(home)
    pid = _spawn(home)
    _wait_ready(home, pid, port, wait_s)
    return pid


def _reuse(home: Path, pid: int, port: int, controller_port: int, wait_s: float) -> int:
    """Return ``pid`` of an already-running broker if it serves the asked ports."""
    ports = _configured_ports(home)
    if ports is not None and ports != (port, controller_port):
        raise BrokerError(
            f"the broker from {home} (pid {pid}) already runs with port={ports[0]}, "
            f"controller_port={ports[1]}; stop() it before starting with port={port}, "
            f"controller_port={controller_port}"
        )
    _wait_ready(home, pid, port, wait_s)
    return pid


def _spawn(home: Path) -> int:
    """Launch ``kafka.Kafka`` detached (own session) and write the pid file."""
    stdout_log = _data(home) / "logs" / "stdout.log"
    with open(stdout_log, "ab") as out:
        proc = subprocess.Popen(
            _java_cmd(home, "kafka.Kafka", str(_props_file(home))),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=home, start_new_session=True,
        )
    _pid_file(home).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_ready(home: Path, pid: int, port: int, wait_s: float) -> None:
    """Poll until the broker answers ApiVersions; fail fast if it dies."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if _healthy(port):
            return
        if not _alive(pid):
            _pid_file(home).unlink(missing_ok=True)
            raise BrokerError(f"Kafka broker exited during start-up; see {_log_hint(home)}")
        time.sleep(0.25)
    raise BrokerError(
        f"Kafka broker (pid {pid}) did not answer on {HOST}:{port} within {wait_s:.0f}s; "
        f"see {_log_hint(home)}"
    )


def _log_hint(home: Path) -> str:
    logs = _data(home) / "logs"
    tail = ""
    try:
        lines = (logs / "stdout.log").read_text(errors="replace").splitlines()[-15:]
        tail = ("\n" + "\n".join(lines)) if lines else ""
    except OSError:
        pass
    return f"{logs / 'server.log'} and {logs / 'stdout.log'}{tail}"


def stop(home: Path, timeout_s: float = 30) -> bool:
    """Stop this home's broker: SIGTERM, wait, then SIGKILL.

    Returns True if a broker was running. Always removes the pid file.
    """
    home = Path(home).resolve()
    pid = running_pid(home)
    if pid is None:
        _pid_file(home).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    _pid_file(home).unlink(missing_ok=True)
    return True


def status(home: Path, port: int = 9092) -> dict:
    """Describe the broker of ``home``: running, pid, port, kafka_version, data_dir."""
    home = Path(home).resolve()
    pid = running_pid(home)
    ports = _configured_ports(home)
    if pid is not None and ports is not None:
        port = ports[0]
    marker = _lib(home) / ".complete"
    return {
        "running": pid is not None and _healthy(port),
        "pid": pid,
        "port": port,
        "kafka_version": marker.read_text().strip() if marker.is_file() else None,
        "data_dir": str(_data(home)),
    }


def wipe(home: Path) -> None:
    """Stop the broker and delete its data dir (topics, offsets, logs); keep jars."""
    home = Path(home).resolve()
    stop(home)
    shutil.rmtree(_data(home), ignore_errors=True)
    _props_file(home).unlink(missing_ok=True)


if __name__ == "__main__":  # tiny manual CLI: python -m app.broker start|stop|status|wipe HOME [PORT]
    action, where = sys.argv[1], Path(sys.argv[2])
    port_arg = int(sys.argv[3]) if len(sys.argv) > 3 else 9092
    if action == "start":
        print(start(where, port_arg, port_arg + 1))
    elif action == "stop":
        print(stop(where))
    elif action == "status":
        print(status(where, port_arg))
    elif action == "wipe":
        wipe(where)
    else:
        raise SystemExit(f"unknown action {action!r}")
