"""Run a real single-node Apache Kafka broker (KRaft combined mode) for tests.

`KafkaBroker` fetches the broker jars from Maven Central on first use (via
``scripts/kafka/fetch.sh``, cached under ``.cache/kafka/<version>/libs``),
formats a KRaft log dir inside a caller-supplied work dir, and runs
``kafka.Kafka`` as a child JVM bound to loopback ports only. The broker can be
stopped and started again on the same ports and data, so tests can simulate an
outage. The JVM runs in its own process group, dies with the Python process
(parent-death signal where ``setpriv`` exists) and is killed at interpreter exit.

With ``secured=True`` the broker also has an ``SSL`` listener that requires a
client certificate (mutual TLS) and a ``SASL_SSL`` listener with SCRAM-SHA-512.
A throwaway CA, the broker's certificate (for 127.0.0.1 and localhost) and a
client certificate are made with ``openssl`` in the work dir; the SCRAM user
``permwatch`` (random password) is written into the metadata log at format
time. The plaintext listener stays for inter-broker traffic and readiness.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import uuid
import zipfile
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from tests.integration.servers.process import ServerProcess, free_loopback_ports, log_tail, port_accepts
from tests.integration.servers.started import StartedInWith

DEFAULT_KAFKA_VERSION = "4.4.0"

_REPO_ROOT = Path(__file__).resolve().parents[3]
_FETCH_SCRIPT = _REPO_ROOT / "scripts" / "kafka" / "fetch.sh"
_HOST = "127.0.0.1"
_STORAGE_TOOL_CLASSES = (
    "kafka.tools.StorageTool",
    "org.apache.kafka.tools.StorageTool",
)
_JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


class KafkaBrokerError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped."""


def _new_cluster_id() -> str:
    """A Kafka-style base64url UUID not starting with '-' (the CLI would see a flag)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker(StartedInWith):
    """One single-node KRaft Kafka broker (broker + controller in one JVM) on loopback.

    Ports are picked on the first ``start()`` and reused by every later start, as
    are the data dir and the cluster id, so ``stop()`` + ``start()`` behaves like
    a real broker restart (committed offsets and topics survive).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        start_timeout: float = 90.0,
        secured: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.version = version
        self.start_timeout = start_timeout
        self.secured = secured
        self.scram_username = "permwatch"
        # A work dir formatted before keeps the credential it was formatted with.
        saved = self.workdir / "scram.password"
        self.scram_password = saved.read_text(encoding="utf-8") if saved.exists() else secrets.token_urlsafe(16)
        self._libs: Path | None = None
        self._port: int | None = None
        self._controller_port: int | None = None
        self._ssl_port: int | None = None
        self._sasl_ssl_port: int | None = None
        self._server = ServerProcess(f"Kafka {version}", self.log_path, KafkaBrokerError)

    # -- public API -------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise KafkaBrokerError("broker has never been started; no port assigned yet")
        return self._port

    @property
    def controller_port(self) -> int:
        if self._controller_port is None:
            raise KafkaBrokerError("broker has never been started; no port assigned yet")
        return self._controller_port

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` for ``bootstrap_servers``."""
        return f"{_HOST}:{self.port}"

    @property
    def ssl_bootstrap(self) -> str:
        """The mutual-TLS listener (``security_protocol = "SSL"``; needs the client certificate)."""
        if self._ssl_port is None:
            raise KafkaBrokerError("no SSL listener: start a broker made with secured=True")
        return f"{_HOST}:{self._ssl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """The SCRAM-SHA-512 over TLS listener (``security_protocol = "SASL_SSL"``; no client certificate)."""
        if self._sasl_ssl_port is None:
            raise KafkaBrokerError("no SASL_SSL listener: start a broker made with secured=True")
        return f"{_HOST}:{self._sasl_ssl_port}"

    @property
    def tls_dir(self) -> Path:
        return self.workdir / "tls"

    @property
    def ca_file(self) -> Path:
        """The test CA that signed the broker's and the client's certificates."""
        return self.tls_dir / "ca.pem"

    @property
    def client_cert_file(self) -> Path:
        return self.tls_dir / "client.pem"

    @property
    def client_key_file(self) -> Path:
        return self.tls_dir / "client.key"

    @property
    def scram_password_file(self) -> Path:
        """The SCRAM user's password in a 0600 file (what ``sasl_password_file`` points at)."""
        return self.workdir / "scram.password"

    @property
    def running(self) -> bool:
        return self._server.running

    @property
    def log_path(self) -> Path:
        """The JVM's stdout/stderr (appended to across restarts)."""
        return self.workdir / "kafka.out"

    @property
    def server_log_path(self) -> Path:
        """Broker log4j output, WARN and above (appended to across restarts)."""
        return self.workdir / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def start(self) -> None:
        """Start the broker and block until an admin client can list topics.

        Fetches the jars and formats storage only when needed. Raises
        `KafkaBrokerError` (with the log tail) if the JVM exits or is not ready
        within ``start_timeout`` seconds; the JVM is killed in that case.
        """
        if self.running:
            raise KafkaBrokerError(f"broker already running at {self.bootstrap}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        libs = self._ensure_libs()
        if self._port is None or self._controller_port is None:
            if self.secured:
                ports = free_loopback_ports(4, KafkaBrokerError)
                self._port, self._controller_port, self._ssl_port, self._sasl_ssl_port = ports
            else:
                self._port, self._controller_port = free_loopback_ports(2, KafkaBrokerError)
        if self.secured and not self.ca_file.exists():
            self._make_certificates()
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(libs)
        self._spawn(libs)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group; SIGKILL it if still alive after ``timeout`` s."""
        self._server.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the process group immediately (an unclean crash)."""
        self._server.kill()

    def restart(self) -> None:
        """``stop()`` then ``start()`` on the same ports and data dir."""
        self.stop()
        self.start()

    def __repr__(self) -> str:
        where = self.bootstrap if self._port is not None else "unstarted"
        state = "running" if self.running else "stopped"
        return f"KafkaBroker({self.version}, {where}, {state}, workdir={self.workdir})"

    # -- internals --------------------------------------------------------------

    def _ensure_libs(self) -> Path:
        if self._libs is not None:
            return self._libs
        result = subprocess.run(
            ["bash", str(_FETCH_SCRIPT), self.version],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"{_FETCH_SCRIPT} {self.version} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        libs = Path(result.stdout.strip().splitlines()[-1])
        if not (libs / f"kafka_2.13-{self.version}.jar").is_file():
            raise KafkaBrokerError(f"fetch.sh reported {libs}, but it has no Kafka jar")
        self._libs = libs
        return libs

    def _write_config(self) -> None:
        port, cport = self.port, self.controller_port
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{_HOST}:{cport}",
            "listeners": f"PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"),
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        if self.secured:
            properties.update(self._security_properties())
        text = "".join(f"{key}={value}\n" for key, value in properties.items())
        (self.workdir / "server.properties").write_text(text, encoding="utf-8")
        log4j2 = (
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.server_log_path}\n"
            "appender.file.append = true\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
        )
        (self.workdir / "log4j2.properties").write_text(log4j2, encoding="utf-8")

    def _security_properties(self) -> dict[str, str]:
        port, cport, tls = self.port, self.controller_port, self.tls_dir
        return {
            "listeners": (
                f"PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{cport},"
                f"SSL://{_HOST}:{self._ssl_port},SASL_SSL://{_HOST}:{self._sasl_ssl_port}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://{_HOST}:{port},SSL://{_HOST}:{self._ssl_port},SASL_SSL://{_HOST}:{self._sasl_ssl_port}"
            ),
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL",
            # PEM stores (Kafka 2.7+): the key file holds the unencrypted PKCS#8 key and the certificate chain.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls / "server-keystore.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls / "ca.pem"),
            "listener.name.ssl.ssl.client.auth": "required",
            "listener.name.sasl_ssl.ssl.client.auth": "none",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        }

    def _make_certificates(self) -> None:
        """A throwaway CA, the broker's certificate for 127.0.0.1/localhost and a client certificate."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise KafkaBrokerError("'openssl' not found on PATH: needed for the secured broker's certificates")
        staging = self.workdir / "tls.partial"  # renamed into place only when complete
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", encoding="ascii"
        )
        (staging / "client.ext").write_text("extendedKeyUsage=clientAuth\n", encoding="ascii")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        ca = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
        steps = [
            [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA"],
            [openssl, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
            [openssl, "x509", "-req", "-in", "server.csr", "-out", "server.pem", *ca, "-extfile", "server.ext"],
            [openssl, "req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=permwatch"],
            [openssl, "x509", "-req", "-in", "client.csr", "-out", "client.pem", *ca, "-extfile", "client.ext"],
        ]
        for command in steps:
            result = subprocess.run(command, cwd=staging, capture_output=True, timeout=60)
            if result.returncode != 0:
                raise KafkaBrokerError(f"{' '.join(command[:3])} failed: {result.stderr.decode(errors='replace')}")
        keystore = "".join((staging / name).read_text(encoding="ascii") for name in ("server.key", "server.pem"))
        (staging / "server-keystore.pem").write_text(keystore, encoding="ascii")
        for key in staging.glob("*.key"):
            key.chmod(0o600)
        self.scram_password_file.write_text(self.scram_password, encoding="utf-8")
        self.scram_password_file.chmod(0o600)
        staging.rename(self.tls_dir)

    def _java_command(self, libs: Path, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaBrokerError("'java' not found on PATH")
        return [
            java,
            *_JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{libs}/*",
            main_class,
            *args,
        ]

    def _storage_tool_class(self, libs: Path) -> str:
        for jar in sorted(libs.glob("kafka*.jar")):
            with zipfile.ZipFile(jar) as archive:
                names = set(archive.namelist())
            for cls in _STORAGE_TOOL_CLASSES:
                if cls.replace(".", "/") + ".class" in names:
                    return cls
        raise KafkaBrokerError(f"no StorageTool class ({_STORAGE_TOOL_CLASSES}) in {libs}")

    def _format_storage(self, libs: Path) -> None:
        config = self.workdir / "server.properties"
        command = self._java_command(
            libs,
            self._storage_tool_class(libs),
            "format",
            "-t",
            _new_cluster_id(),
            "-c",
            str(config),
            "--standalone",
        )
        if self.secured:  # KRaft keeps SCRAM credentials in the metadata log; format can add the first ones
            command += ["--add-scram", f"SCRAM-SHA-512=[name={self.scram_username},password={self.scram_password}]"]
        result = subprocess.run(
            command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"formatting {self.data_dir} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def _spawn(self, libs: Path) -> None:
        command = self._java_command(libs, "kafka.Kafka", str(self.workdir / "server.properties"))
        self._server.spawn(command, cwd=self.workdir)

    def _wait_ready(self) -> None:
        self._server.wait_ready(
            self._admin_lists_topics,
            timeout=self.start_timeout,
            where=self.bootstrap,
            logs=self._log_tails,
            retry_on=(KafkaError, OSError),
            interval=0.25,
        )

    def _admin_lists_topics(self) -> bool:
        # A plain TCP probe first: kafka-python leaks a socket per refused connect.
        if not port_accepts(_HOST, self.port):
            return False
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="kafka-broker-readiness",
            bootstrap_timeout_ms=3000,
            request_timeout_ms=5000,
        )
        try:
            admin.list_topics()
        finally:
            admin.close()
        return True

    def _log_tails(self) -> str:
        return (
            f"--- {self.log_path} ---\n{log_tail(self.log_path)}\n"
            f"--- {self.server_log_path} ---\n{log_tail(self.server_log_path)}"
        )
