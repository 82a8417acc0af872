"""A real WordPress for the companion plugin's tests (plugins/woocommerce).

Debian's `wordpress` package provides WordPress, `php-cli` the interpreter and PHP's built-in web
server, `php-mysql` the driver and `mariadb-server` the database. Everything runs from a temporary
directory: a private MariaDB on a Unix socket (no TCP port, no system service), a copy of
/usr/share/wordpress with our own wp-config.php (Debian's reads /etc/wordpress/config-<host>.php),
the plugin installed from its release zip (plugins/package.py) by WordPress's own upgrader, as
"Upload Plugin" does, a minimal classic theme, and a
must-use plugin standing in for the parts of WooCommerce the plugin relies on (WooCommerce is not
in our package sources; tests/wordpress/mu-plugins/bridge-test.php says what it provides).

`make test` installs the packages when it runs as root (CI does). Without them the tests skip
with the command to run; under CI=true they fail instead, so CI can never skip them silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "woocommerce"
FIXTURES = Path(__file__).resolve().parent / "wordpress"
WORDPRESS = Path("/usr/share/wordpress")
PACKAGES = "wordpress php-cli php-mysql mariadb-server"


def _load_package() -> Any:
    # plugins/package.py is a standalone script (standard library only), not part of a package.
    spec = importlib.util.spec_from_file_location("plugin_package", REPO / "plugins" / "package.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


package = _load_package()


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def missing() -> list[str]:
    """What this machine lacks to run the WordPress tests (empty when it has everything)."""
    gone = []
    php = _tool("php")
    if php is None:
        gone.append("php (php-cli)")
    else:
        modules = subprocess.run([php, "-m"], capture_output=True, text=True, check=False).stdout
        if "mysqli" not in modules.split():
            gone.append("the mysqli extension (php-mysql)")
    if not (WORDPRESS / "wp-settings.php").exists():
        gone.append("WordPress in /usr/share/wordpress (wordpress)")
    gone += [f"{t} (mariadb-server)" for t in ("mariadbd", "mariadb-install-db") if not _tool(t)]
    return gone


def require_wordpress() -> None:
    """Skip (locally) or fail (under CI=true) when the packages are missing."""
    gone = missing()
    if not gone:
        return
    message = (
        f"a real WordPress is needed and this machine lacks: {', '.join(gone)}. "
        f"Install with: apt-get install {PACKAGES} (make test does it when run as root)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Result:
    """One driver request: its value, and everything else it printed (warnings, notices)."""

    value: Any
    output: str


@dataclass
class WordPress:
    base: Path
    url: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Extra must-use plugins (file name -> PHP source), e.g. a benchmark's timers.
    mu_plugins: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.base / "wordpress"

    @property
    def debug_log(self) -> Path:
        return self.base / "debug.log"

    @property
    def socket(self) -> Path:
        return self.base / "mysqld.sock"

    # -- setup -------------------------------------------------------------------------------

    def start(self) -> None:
        self._start_database()
        self._copy_wordpress()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        zip_path = package.build(self.base / "dist")
        installed = self.request("install", {"url": self.url, "zip": str(zip_path)})
        if installed.value is not True:
            raise RuntimeError(f"WordPress install failed: {installed.value!r}\n{installed.output}")
        self._start_web_server(port)

    def _start_database(self) -> None:
        data = self.base / "db"
        user = pwd.getpwuid(os.getuid()).pw_name
        subprocess.run(
            [
                _tool("mariadb-install-db") or "mariadb-install-db",
                "--no-defaults",
                # --force: no check that this host's name resolves (a bare container or chroot
                # has no /etc/hosts); the server is reached by its socket only, with no names.
                "--force",
                "--skip-name-resolve",
                f"--datadir={data}",
                f"--user={user}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.processes.append(
            subprocess.Popen(
                [
                    _tool("mariadbd") or "mariadbd",
                    "--no-defaults",
                    f"--datadir={data}",
                    f"--socket={self.socket}",
                    "--skip-networking",
                    "--skip-name-resolve",
                    f"--user={user}",
                    f"--pid-file={self.base / 'mysqld.pid'}",
                    f"--log-error={self.base / 'mysqld.err'}",
                    "--innodb-buffer-pool-size=16M",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 60
        while True:
            created = subprocess.run(
                [
                    "mariadb",
                    "--no-defaults",
                    f"--socket={self.socket}",
                    "-uroot",
                    "-e",
                    "CREATE DATABASE IF NOT EXISTS wordpress CHARACTER SET utf8mb4",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if created.returncode == 0:
                return
            if time.monotonic() > deadline or self.processes[-1].poll() is not None:
                log = (self.base / "mysqld.err").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"MariaDB did not start: {created.stderr}\n{log}")
            time.sleep(0.2)

    def _copy_wordpress(self) -> None:
        shutil.copytree(WORDPRESS, self.root, symlinks=True)
        (self.root / "wp-config.php").unlink()
        keys = "\n".join(
            f"define('{k}', '{secrets.token_hex(32)}');"
            for k in (
                "AUTH_KEY",
                "SECURE_AUTH_KEY",
                "LOGGED_IN_KEY",
                "NONCE_KEY",
                "AUTH_SALT",
                "SECURE_AUTH_SALT",
                "LOGGED_IN_SALT",
                "NONCE_SALT",
            )
        )
        (self.root / "wp-config.php").write_text(f"""<?php
define('DB_NAME', 'wordpress');
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', 'localhost:{self.socket}');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
{keys}
$table_prefix = 'wp_';
// Every PHP warning and notice is printed, so that the tests see any the plugin causes.
define('WP_DEBUG', true);
define('WP_DEBUG_DISPLAY', true);
define('WP_DEBUG_LOG', '{self.debug_log}');
define('WP_ENVIRONMENT_TYPE', 'local');
define('DISABLE_WP_CRON', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('FS_METHOD', 'direct');
define('WP_CONTENT_DIR', __DIR__ . '/wp-content');
if (getenv('BRIDGE_TEST_SPOOL_CONSTANT')) {{
    define('BRIDGE_AGENT_SPOOL_DIR', getenv('BRIDGE_TEST_SPOOL_CONSTANT'));
}}
if (!defined('ABSPATH')) {{
    define('ABSPATH', __DIR__ . '/');
}}
require_once ABSPATH . 'wp-settings.php';
""")
        content = self.root / "wp-content"
        shutil.copytree(FIXTURES / "theme" / "bridge-test", content / "themes" / "bridge-test")
        shutil.copytree(FIXTURES / "mu-plugins", content / "mu-plugins")
        for name, source in self.mu_plugins.items():
            (content / "mu-plugins" / name).write_text(source)

    def _start_web_server(self, port: int) -> None:
        env = dict(os.environ, PHP_CLI_SERVER_WORKERS="4")
        self.processes.append(
            subprocess.Popen(
                ["php", "-S", f"127.0.0.1:{port}", "-t", str(self.root)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                # A group of its own: PHP_CLI_SERVER_WORKERS forks workers that outlive a
                # terminated master (they piled up across runs); stop() ends the whole group.
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/wp-login.php", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("PHP's built-in web server did not answer")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in reversed(self.processes):
            _signal(process, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                _signal(process, signal.SIGKILL)
                process.wait()
            _signal(process, signal.SIGKILL)  # whatever of its group is left (PHP's workers)

    # -- requests ----------------------------------------------------------------------------

    def request(self, command: str, args: Any = None, env: dict[str, str] | None = None) -> Result:
        """One WordPress request through tests/wordpress/driver.php (a PHP process)."""
        done = subprocess.run(
            ["php", str(FIXTURES / "driver.php"), str(self.root), command, json.dumps(args or {})],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(os.environ, BRIDGE_TEST_HOST=self.url.removeprefix("http://"), **(env or {})),
        )
        lines = done.stdout.splitlines()
        results = [line for line in lines if line.startswith("@@result ")]
        rest = "\n".join(line for line in lines if not line.startswith("@@result "))
        output = (rest + "\n" + done.stderr).strip()
        if done.returncode != 0 or not results:
            raise RuntimeError(f"driver {command} failed ({done.returncode}):\n{output}")
        return Result(json.loads(results[-1].removeprefix("@@result ")), output)

    def ops(self, *ops: dict[str, Any], env: dict[str, str] | None = None) -> Result:
        """Several operations in one request."""
        return self.request("ops", list(ops), env=env)

    def value(self, op: dict[str, Any]) -> Any:
        return self.ops(op).value[0]


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal a process's own group when it leads one (the web server), else the process."""
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass  # gone already
