"""gunicorn settings for flask-api: settings and hooks only (the classes it installs are in src/serving.py).

Every setting comes from the environment, or from .env read as the application reads it (the real environment
wins), with a production default, so the same file serves a laptop, the container and the Kubernetes
Deployment. gunicorn runs this file in the master only; the hooks below run in the master (on_starting,
when_ready, child_exit, on_exit) or in each worker (post_fork, post_worker_init).
"""

import gc
import os
import shutil
import signal
import tempfile

from src.config import load_env_file
from src.serving import GunicornEnv, JsonLogger

# .env from the working directory, as the application reads it: the real environment wins.
load_env_file()
_env = GunicornEnv(os.environ)

# ---------------------------------------------------------------------------------------------------------
# Server socket and workers
# ---------------------------------------------------------------------------------------------------------
_port = _env.integer("PORT", 8888, minimum=1)
bind = [_env.text("GUNICORN_BIND", f"0.0.0.0:{_port}")]
workers = _env.integer("WEB_CONCURRENCY", 4, minimum=1)
# Each worker is an event loop (src/worker.py, docs/serving.md has the figures): it holds every connection,
# slow ones included, answers the routes that wait on nothing itself, and runs password hashing, synced writes
# and database queries on a pool of this many threads. argon2-cffi and psycopg release the GIL, so the loop
# keeps answering probes and token checks during a login flood. GUNICORN_THREADS=1 gives gunicorn's sync
# workers back.
threads = _env.integer("GUNICORN_THREADS", 8, minimum=1)
worker_class = "src.worker.Worker" if threads > 1 else "sync"
# Connections one worker holds at once (idle keep-alive and slow clients included); at the limit a new one
# takes the slot of the one waiting longest for a request head, or waits in the backlog (src/worker.py).
worker_connections = _env.integer("GUNICORN_WORKER_CONNECTIONS", 1000, minimum=1)
# Seconds a connection may take to send a complete request head, first request or not: a silent connection
# is closed after it (src/worker.py; event-loop workers only). Handed to each worker by post_fork.
_header_timeout = _env.integer("GUNICORN_HEADER_TIMEOUT", 10, minimum=1)
timeout = _env.integer("GUNICORN_TIMEOUT", 30, minimum=1)
# Below the pod's terminationGracePeriodSeconds (45) minus the preStop pause (5).
graceful_timeout = _env.integer("GUNICORN_GRACEFUL_TIMEOUT", 20, minimum=1)
# Seconds an idle keep-alive connection is kept; the proxies' idle time to their upstream stays
# below it, so that the worker never closes a connection a proxy is about to reuse.
keepalive = _env.integer("GUNICORN_KEEPALIVE", 5, minimum=0)
# Recycle workers now and then so a slow leak cannot grow without bound; jitter spreads the restarts.
# A restart costs a boot (a third of a second with the JSON store at 100,000 users, for its index): 5,000 was
# a restart every 2 s per worker at the benchmark's rate, and /healthz's p99 went from 10 ms to 200-590 ms.
max_requests = _env.integer("GUNICORN_MAX_REQUESTS", 100_000)
max_requests_jitter = _env.integer("GUNICORN_MAX_REQUESTS_JITTER", 10_000)
# The heartbeat file is touched every second (and by sync workers on every request): a memory filesystem keeps
# that off the disk, and the root filesystem is read-only in the container.
worker_tmp_dir = _env.text("GUNICORN_WORKER_TMP_DIR", "/dev/shm")  # noqa: S108
if worker_tmp_dir and not os.path.isdir(worker_tmp_dir):
    worker_tmp_dir = None  # no /dev/shm (macOS): gunicorn's default temporary folder
# Only these proxies may set X-Forwarded-Proto / X-Forwarded-For for gunicorn's sync workers; never "*" by
# default. The event-loop workers (src/http1.py) leave forwarded headers to the application (TRUSTED_PROXIES).
forwarded_allow_ips = _env.text("FORWARDED_ALLOW_IPS", "127.0.0.1")
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
loglevel = _env.text("LOG_LEVEL", "info").lower()
capture_output = False


# JSON lines on stdout for gunicorn's own messages (src/serving.py).
logger_class = JsonLogger

# ---------------------------------------------------------------------------------------------------------
# Metrics: prometheus_client multiprocess mode
# ---------------------------------------------------------------------------------------------------------
# Each worker writes its samples to memory-mapped files in PROMETHEUS_MULTIPROC_DIR; whoever answers a scrape
# (any worker on the app port, or the master on METRICS_PORT) adds up every worker's files.
_metrics_enabled = _env.flag("METRICS_ENABLED", True)
_metrics_port = _env.integer("METRICS_PORT", 0, minimum=1) or None


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
    """Worker: take the header timeout; drop its inherited copy of the master's metrics socket."""
    worker.header_timeout = _header_timeout
    metrics_server = getattr(server, "flask_api_metrics_server", None)
    if metrics_server is not None:
        metrics_server.socket.close()


def post_worker_init(worker) -> None:
    """Worker: on SIGTERM, turn /readyz to 503 at once, then let gunicorn finish the request in hand."""
    if not getattr(worker, "drains_on_sigterm", False):  # src/worker.py does it itself; the sync worker not
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
