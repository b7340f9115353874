"""Debian's nginx, run as a process of the test run with the project's proxy config (deploy/nginx/).

The committed server block (deploy/nginx/default.conf.template) is rendered the way the nginx image renders
it (``${NAME}`` from the environment, nginx's ``$variables`` untouched) and included from a minimal main
config whose pid file, logs and temp folders live in a fresh folder: nothing of the system's nginx is used.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from harness import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "deploy" / "nginx" / "default.conf.template"

_MAIN_CONFIG = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/default.conf;
}}
"""


def nginx_executable() -> str:
    """nginx from PATH or /usr/sbin; installed with apt-get when missing and running as root."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise FileNotFoundError("nginx is not installed: apt-get install nginx")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=600"]
    subprocess.run([*apt, "update"], check=True, env=environment, timeout=900)
    subprocess.run(
        [*apt, "install", "-y", "--no-install-recommends", "nginx"], check=True, env=environment, timeout=900
    )
    return "/usr/sbin/nginx"


def render(template: str, values: Mapping[str, str]) -> str:
    """``${NAME}`` replaced from ``values``, as envsubst does for defined variables; KeyError for others."""
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", lambda match: values[match.group(1)], template)


class NginxProxy:
    """The project's nginx config on 127.0.0.1:<free port>, proxying to ``upstream`` (host:port)."""

    def __init__(self, upstream: str, max_content_length: int = 1_048_576) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.values = {
            "APP_UPSTREAM": upstream,
            "PROXY_PORT": f"127.0.0.1:{self.port}",
            "MAX_CONTENT_LENGTH": str(max_content_length),
        }
        self.prefix = Path(tempfile.mkdtemp(prefix="flask-api-nginx-"))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> NginxProxy:
        """Render the configs, start nginx in the foreground and wait until it accepts connections."""
        executable = nginx_executable()
        # As root, nginx's workers run as nobody: they must reach the temp folders.
        self.prefix.chmod(0o755)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / name).mkdir(mode=0o777, exist_ok=True)
            (self.prefix / name).chmod(0o777)
        (self.prefix / "default.conf").write_text(render(TEMPLATE.read_text(), self.values))
        config = self.prefix / "nginx.conf"
        config.write_text(_MAIN_CONFIG.format(prefix=self.prefix))
        command = [executable, "-p", str(self.prefix), "-c", str(config), "-g", "daemon off;"]
        subprocess.run([*command, "-t", "-q"], check=True, capture_output=True, timeout=30)
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._process.returncode}: {self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.close()
        raise TimeoutError(f"nginx not listening after {timeout} s: {self.errors()}")

    def errors(self) -> str:
        """nginx's error log so far."""
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Stop nginx (SIGQUIT: graceful, then SIGKILL) and remove its folder."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGQUIT)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> NginxProxy:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()
