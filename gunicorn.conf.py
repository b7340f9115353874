"""gunicorn settings for flask-api.

Every setting comes from the environment with a production default, so the same file serves a laptop, the
container and the Kubernetes Deployment. gunicorn runs this file in the master only; the hooks below run in
the master (on_starting, when_ready, child_exit, on_exit) or in each worker (post_fork, post_worker_init).
"""

import gc
import json
import logging
import os
import shutil
import signal
import tempfile
import time

from gunicorn import glogging

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SystemExit(f"{name} must be true or false, got {raw!r}")


# ---------------------------------------------------------------------------------------------------------
# Server socket and workers
# ---------------------------------------------------------------------------------------------------------
_port = _env_int("PORT", 8888, minimum=1)
bind = [os.environ.get("GUNICORN_BIND", "").strip() or f"0.0.0.0:{_port}"]
workers = _env_int("WEB_CONCURRENCY", 4, minimum=1)
# Threads in each worker (docs/serving.md has the figures). argon2-cffi releases the GIL while it hashes, so
# the other threads keep answering probes and token checks during a login flood, where a sync worker answers
# nothing for as long as it hashes. Slow clients are the buffering proxy's job (nginx, Traefik, the ALB): no
# worker class absorbs them. GUNICORN_THREADS=1 gives gunicorn's sync workers back.
threads = _env_int("GUNICORN_THREADS", 8, minimum=1)
worker_class = "gthread" if threads > 1 else "sync"
timeout = _env_int("GUNICORN_TIMEOUT", 30, minimum=1)
# Below the pod's terminationGracePeriodSeconds (45) minus the preStop pause (5).
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 20, minimum=1)
# Seconds an idle keep-alive connection is kept (gthread); above the proxies' idle time to their upstream
# would let the worker close a connection the proxy is about to reuse, so the proxy configs stay below it.
keepalive = _env_int("GUNICORN_KEEPALIVE", 5, minimum=0)
# Recycle workers now and then so a slow leak cannot grow without bound; jitter spreads the restarts.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 5000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 500)
# The heartbeat file is touched on every request: a memory filesystem keeps that off the disk, and the root
# filesystem is read-only in the container.
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR", "/dev/shm").strip() or None  # noqa: S108
if worker_tmp_dir and not os.path.isdir(worker_tmp_dir):
    worker_tmp_dir = None  # no /dev/shm (macOS): gunicorn's default temporary folder
# Only these proxies may set X-Forwarded-Proto / X-Forwarded-For for gunicorn; never "*" by default.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1").strip()
# gunicorn 27 opens a control socket under ~/.gunicorn by default: shared by every instance on the machine
# and impossible on a read-only root filesystem. Nothing here uses gunicornc.
control_socket_disable = True
preload_app = False
proc_name = "flask-api"

# ---------------------------------------------------------------------------------------------------------
# Logging: JSON lines on stdout
# ---------------------------------------------------------------------------------------------------------
# gunicorn's own access log stays off: the application writes one JSON access line per request with the
# route template and request id (src/observability.py), at a fraction of the cost of gunicorn's atoms.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").strip().lower() or "info"
capture_output = False


# The master does not import src.observability for these two classes: importing the application would import
# prometheus_client before on_starting has chosen PROMETHEUS_MULTIPROC_DIR, and the forked workers would then
# keep their samples to themselves. The application replaces the root handler with its own, which adds the
# request id.
class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class StdoutLineHandler(logging.Handler):
    """Write each record with a single os.write to stdout: lines from several workers never interleave."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(1, (self.format(record) + "\n").encode("utf-8", "backslashreplace"))
        except Exception:  # noqa: BLE001 - logging must never take the server down
            self.handleError(record)


class JsonLogger(glogging.Logger):
    """gunicorn's logger with its error log as JSON lines on stdout."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if cfg.errorlog == "-":
            for handler in [h for h in self.error_log.handlers if getattr(h, "_gunicorn", False)]:
                self.error_log.removeHandler(handler)
            handler = StdoutLineHandler()
            handler._gunicorn = True  # lets gunicorn's next setup() (on reload) replace it
            self.error_log.addHandler(handler)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonLineFormatter())
        # Records logged before the application installs its own JSON handler (imports, configuration
        # errors) go through the root logger: give it the same format so that no plain line escapes.
        root = logging.getLogger()
        if not any(getattr(h, "_flask_api_json", False) for h in root.handlers):
            root_handler = StdoutLineHandler()
            root_handler.setFormatter(JsonLineFormatter())
            root_handler._flask_api_json = True
            root.addHandler(root_handler)
        root.setLevel(self.loglevel)


logger_class = JsonLogger

# ---------------------------------------------------------------------------------------------------------
# Metrics: prometheus_client multiprocess mode
# ---------------------------------------------------------------------------------------------------------
# Each worker writes its samples to memory-mapped files in PROMETHEUS_MULTIPROC_DIR; whoever answers a scrape
# (any worker on the app port, or the master on METRICS_PORT) adds up every worker's files.
_metrics_enabled = _env_bool("METRICS_ENABLED", True)
_metrics_port = _env_int("METRICS_PORT", 0, minimum=1) or None


def _bind_host(address: str) -> str:
    """The host part of a gunicorn bind address ("0.0.0.0:8888", "[::1]:8888", "unix:/run/app.sock")."""
    if address.startswith(("unix:", "fd://")):
        return "127.0.0.1"
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]") or "0.0.0.0"  # noqa: S104 - the same interfaces as the application


def on_starting(server) -> None:
    """Master start: give the workers an empty multiprocess folder before any of them is forked."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if path:
        os.makedirs(path, mode=0o700, exist_ok=True)
        # Files left by a previous master would be added to this one's counts.
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix="flask-api-metrics-")
        # Kept on the arbiter, which outlives a configuration reload (SIGHUP re-reads this file).
        server.flask_api_metrics_dir = path
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    server.log.info("Prometheus multiprocess folder: %s", path)
    _check_settings(server)


def _check_settings(server) -> None:
    """Refuse a bad setting in the master, before forking: one line naming the variable, no traceback.

    Imported here, after the multiprocess folder is in the environment (see when_ready).
    """
    from src import ConfigError, load_settings  # noqa: PLC0415

    try:
        load_settings()
    except ConfigError as exc:
        on_exit(server)  # gunicorn does not call it when on_starting fails
        raise SystemExit(f"Invalid configuration: {exc}") from None


def when_ready(server) -> None:
    """Master listening: serve the aggregated registry on METRICS_PORT when it is set."""
    if not (_metrics_enabled and _metrics_port):
        return
    # Imported only now: prometheus_client chooses its multiprocess storage at import time, from the folder
    # that on_starting has just put in the environment.
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

    from src.metrics_files import FoldingCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    FoldingCollector(registry)
    host = _bind_host(server.cfg.bind[0])
    metrics_server, _thread = start_http_server(_metrics_port, addr=host, registry=registry)
    server.flask_api_metrics_server = metrics_server
    server.log.info("Serving /metrics on %s:%s", host, _metrics_port)


def post_fork(server, worker) -> None:
    """Worker: drop its inherited copy of the master's metrics socket."""
    metrics_server = getattr(server, "flask_api_metrics_server", None)
    if metrics_server is not None:
        metrics_server.socket.close()


def post_worker_init(worker) -> None:
    """Worker: on SIGTERM, turn /readyz to 503 at once, then let gunicorn finish the request in hand."""
    from src.lifecycle import start_draining  # noqa: PLC0415 - the master never imports the application

    graceful_exit = worker.handle_exit

    def handle_exit(sig, frame) -> None:
        start_draining()
        graceful_exit(sig, frame)

    worker.handle_exit = handle_exit
    # gunicorn installed its handler (the bound method) before this hook ran: install ours in its place.
    signal.signal(signal.SIGTERM, handle_exit)
    # The application is loaded by now, with the JSON store's user index (about 100 MiB of objects at 100k
    # users). Left to the cyclic garbage collector, every full collection walks all of them: 35-40 ms pauses
    # that dragged /hello's p99 from 19 to 52 ms at 100k users. Frozen objects are never scanned again.
    gc.collect()
    gc.freeze()


def child_exit(server, worker) -> None:
    """Master: a worker is gone; its live gauges go, its counters and histograms join the archive files."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        from prometheus_client import multiprocess  # noqa: PLC0415 - see when_ready

        from src.metrics_files import fold_dead_worker  # noqa: PLC0415

        multiprocess.mark_process_dead(worker.pid, path)
        try:
            fold_dead_worker(path, worker.pid)
        except (OSError, ValueError) as exc:  # a damaged file must not take the master down
            server.log.warning("metric files of worker %s not folded: %s", worker.pid, exc)


def on_exit(server) -> None:
    """Master exit: stop the metrics listener and remove the folder this master created."""
    metrics_server = getattr(server, "flask_api_metrics_server", None)
    if metrics_server is not None:
        metrics_server.shutdown()
        metrics_server.server_close()
    created_dir = getattr(server, "flask_api_metrics_dir", None)
    if created_dir:
        shutil.rmtree(created_dir, ignore_errors=True)
