"""Embedded Apache Kafka: one KRaft node (broker and controller in one JVM) on loopback ports.

As Kafka's quickstart does it, from jars only:
1. The classpath comes from `kafka-broker.pom.xml` beside this file, resolved from Maven
   Central once by `mvn dependency:copy-dependencies` into a cache outside the repository
   (`CIPHERSTREAM_CACHE_DIR`, default `~/.cache/cipherstream`); every later start is offline.
2. The storage is formatted with a fresh cluster id (`kafka.tools.StorageTool format --standalone`).
3. `kafka.Kafka` runs with a generated `server.properties`, a bounded heap, and retention
   small enough that a long local run's disk stays bounded.

Start-up is ready-checked with a real Kafka request (metadata naming this broker), not just
an open port. The JVM dies with its caller (see processes.py).
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

from services.core.embedded.processes import ManagedProcess, free_port, start_process, wait_for_port
from services.core.errors import ConfigError, UnreachableError

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka-broker.pom.xml")
# A JVM start, storage format and metadata catch-up take 4-8 s on this machine kind.
READY_TIMEOUT_S = 60.0
# Bounded so the broker, Redis and five services fit a 2-core, small-memory laptop or CI box.
HEAP = "-Xms256m -Xmx512m"
MIN_JAVA_MAJOR = 17


def cache_dir() -> Path:
    return Path(os.environ.get("CIPHERSTREAM_CACHE_DIR") or Path.home() / ".cache" / "cipherstream")


def classpath_dir() -> Path:
    """Where this pom's jars live: keyed by the pom's hash, so a version bump resolves afresh."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return cache_dir() / "kafka" / f"{KAFKA_VERSION}-{digest}"


def _require(tool: str, install_hint: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise ConfigError(f"the embedded Kafka broker needs `{tool}` ({install_hint}); "
                          "or set CIPHERSTREAM_EMBEDDED_BROKER=tansu, or KAFKA_BOOTSTRAP_SERVERS")
    return found


def java_major_version(java: str) -> int:
    """The major version `java -version` reports (`17.0.15` -> 17, `1.8.0_392` -> 8)."""
    output = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    for token in output.split():
        token = token.strip('"')
        if (token[:1].isdigit() and "." in token) or token.isdigit():
            parts = token.split(".")
            return int(parts[1]) if parts[0] == "1" else int(parts[0])
    raise ConfigError(f"cannot read the Java version from: {output.strip()[:200]}")


def java_binary() -> str:
    java = _require("java", "Java 17: `apt-get install openjdk-17-jre-headless`")
    major = java_major_version(java)
    if major < MIN_JAVA_MAJOR:
        raise ConfigError(f"Apache Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} or newer; {java} is Java {major}")
    return java


def resolve_classpath() -> Path:
    """The folder of the broker's jars, resolved from Maven Central on first use (locked against
    concurrent first uses); offline afterwards."""
    target = classpath_dir()
    done = target / ".complete"
    if done.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return target
        mvn = _require("mvn", "Maven: `apt-get install maven`")
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={staging}"],
            capture_output=True, text=True, check=False, timeout=900,
        )
        jars = list(staging.glob("*.jar")) if staging.exists() else []
        if result.returncode != 0 or not jars:
            raise ConfigError(f"resolving Apache Kafka {KAFKA_VERSION}'s jars from Maven Central failed "
                              f"(mvn exit {result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        done.write_text(f"{len(jars)} jars\n")
    return target


def server_properties(data_dir: Path, broker_port: int, controller_port: int) -> str:
    """A single KRaft node on loopback; internal topics with one replica and few partitions (a
    single node makes 50 partitions of __consumer_offsets slowly and needs none of them)."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests and local runs join groups constantly; the default 3 s delay only slows them.
        "group.initial.rebalance.delay.ms": "0",
        # Leases (core/lease.py) use 3 s sessions so a standby takes over quickly.
        "group.min.session.timeout.ms": "1000",
        # Bounded disk for long local runs (soak, `cipherstream up`): per partition at most
        # 4 segments of 32 MiB, and nothing older than an hour; checked every 30 s.
        "log.segment.bytes": str(32 * 1024 * 1024),
        "log.retention.bytes": str(128 * 1024 * 1024),
        "log.retention.ms": str(60 * 60 * 1000),
        "log.retention.check.interval.ms": "30000",
        # Few threads: on a 2-core machine the defaults (3 network, 8 I/O) only contend.
        "num.network.threads": "1",
        "num.io.threads": "2",
        "background.threads": "2",
        # A killed transactional worker's open transaction is aborted after this at the latest.
        "transaction.max.timeout.ms": str(15 * 60 * 1000),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


LOG4J_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.BrokerServer
logger.server.level = info
"""


def _java_argv(java: str, classpath: Path, work_dir: Path, main_class: str, *args: str) -> list[str]:
    return [
        java, *HEAP.split(), "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={work_dir / 'log4j2.properties'}",
        "-cp", f"{classpath}/*", main_class, *args,
    ]


def start_kafka(log_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Format fresh storage under `log_dir` and start one KRaft node; return it and its bootstrap address.

    A given `port` (a restart on the same address) keeps the data formatted before, as a
    broker restart does; otherwise the storage is new."""
    java = java_binary()
    classpath = resolve_classpath()
    work_dir = log_dir / "kafka"
    data_dir = work_dir / "data"
    restarting = port is not None and (data_dir / "meta.properties").exists()
    broker_port = port or free_port()
    controller_port = _controller_port(work_dir, restarting)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "log4j2.properties").write_text(LOG4J_PROPERTIES)
    config = work_dir / "server.properties"
    config.write_text(server_properties(data_dir, broker_port, controller_port))
    if not restarting:
        shutil.rmtree(data_dir, ignore_errors=True)
        cluster_id = random_cluster_id()
        formatted = subprocess.run(
            _java_argv(java, classpath, work_dir, "kafka.tools.StorageTool", "format", "--standalone",
                       "-t", cluster_id, "-c", str(config)),
            capture_output=True, text=True, check=False, timeout=120,
        )
        if formatted.returncode != 0:
            raise UnreachableError(f"formatting the Kafka storage failed: {(formatted.stdout + formatted.stderr)[-2000:]}")
    managed = start_process("kafka", _java_argv(java, classpath, work_dir, "kafka.Kafka", str(config)), log_dir)
    bootstrap = f"127.0.0.1:{broker_port}"
    try:
        wait_for_port("127.0.0.1", broker_port, READY_TIMEOUT_S, process=managed.process)
        wait_for_broker(bootstrap, managed)
    except BaseException:
        managed.kill()
        raise
    return managed, bootstrap


def _controller_port(work_dir: Path, restarting: bool) -> int:
    """The controller keeps its port across a restart (the quorum's voter address is in the storage)."""
    remembered = work_dir / "controller.port"
    if restarting and remembered.exists():
        return int(remembered.read_text())
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    remembered.write_text(str(port))
    return port


def random_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: a v4 UUID, URL-safe base64, no padding, and (as
    Kafka's `Uuid.randomUuid` does) never starting with '-', which its command line would read as
    an option.

    >>> all(not random_cluster_id().startswith("-") and len(random_cluster_id()) == 22 for _ in range(500))
    True
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def wait_for_broker(bootstrap: str, managed: ManagedProcess, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Ready when a metadata request names a broker (the listener opens a little before that)."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise UnreachableError(f"Kafka exited with {managed.process.returncode} before it was ready: "
                                   f"{managed.log_path.read_text()[-2000:]}")
        try:
            if _in_own_loop(_broker_count(bootstrap)) > 0:
                return
        except Exception as error:  # aiokafka raises KafkaError, OSError or TimeoutError while it starts
            last_error = error
        time.sleep(0.2)
    raise UnreachableError(f"Kafka at {bootstrap} not ready within {timeout_s:.0f} s: {last_error!r}")


async def _broker_count(bootstrap: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
        return len(cluster.get("brokers", []))
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _in_own_loop(coroutine: object) -> int:
    """Run a coroutine to completion on a loop of its own, also when called from inside a running loop."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)  # type: ignore[arg-type]
        except BaseException as error:  # handed back to the caller's thread below
            outcome["error"] = error

    thread = threading.Thread(target=run, name="kafka-ready-check")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return int(outcome["value"])  # type: ignore[call-overload]


if __name__ == "__main__":  # `python -m services.core.embedded.kafka`: resolve the jars now (set-up, CI)
    print(f"Apache Kafka {KAFKA_VERSION}: {java_binary()}, jars in {resolve_classpath()}")
