"""Shared fixtures: a real PostgreSQL 15 started by the test session, and a fresh database per test.

PostgreSQL refuses to run as root, so as root ``initdb`` and ``pg_ctl`` run as the
``postgres`` user (pytest itself cannot: the interpreter may live in root's home). A
server that cannot start fails the tests that need it; it never skips them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest

PG_BIN = os.environ.get("FILEPROC_TEST_PG_BIN", "/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def _run(command: list[str], what: str, log: str | None = None) -> None:
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"PostgreSQL for tests: {what} failed: {error}", pytrace=False)
    if done.returncode != 0:
        tail = ""
        if log and os.path.exists(log):
            with open(log, errors="replace") as file:
                tail = "\nserver log:\n" + file.read()[-4000:]
        pytest.fail(
            f"PostgreSQL for tests: {what} exited {done.returncode}:\n{done.stdout}{done.stderr}{tail}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL 15 server on a free loopback port, stopped at the end."""
    initdb, pg_ctl = os.path.join(PG_BIN, "initdb"), os.path.join(PG_BIN, "pg_ctl")
    if not os.access(initdb, os.X_OK):
        pytest.fail(f"PostgreSQL for tests: {initdb} is missing (run bin/dev to install it)", pytrace=False)
    directory = tempfile.mkdtemp(prefix="fileproc-pg-")
    data = os.path.join(directory, "data")
    log = os.path.join(directory, "server.log")
    port = _free_port()
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        _run(
            _as_postgres(
                initdb,
                "-D",
                data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ),
            "initdb",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={directory}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        # -l matters: without a log file the server keeps our captured stdout open forever.
        started = True
        _run(
            _as_postgres(pg_ctl, "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start"),
            "pg_ctl start",
            log,
        )
        name = "fileproc_test"
        _create_database(port, name)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"
    finally:
        if started:
            subprocess.run(
                _as_postgres(pg_ctl, "-D", data, "-m", "fast", "-w", "stop"),
                check=False,
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(directory, ignore_errors=True)


def _create_database(port: int, name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as error:
        pytest.fail(f"PostgreSQL for tests: CREATE DATABASE {name} failed: {error}", pytrace=False)


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL of an empty database of its own for one test, on each supported backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fileproc.db'}"
    server = request.getfixturevalue("postgres_url")
    base, _, _ = server.rpartition("/")
    name = f"t_{uuid.uuid4().hex[:16]}"
    _create_database(int(base.rpartition(":")[2]), name)
    return f"{base}/{name}"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "in_process: the test watches the pipeline from inside (a spy, a patched library), "
        "so its sites run jobs in the test's own process (isolate_jobs=False)",
    )


@pytest.fixture
def make_site(tmp_path, request):
    """Build embedded-default installations in this test's directory; closed afterwards."""
    from support import Site

    sites = []
    in_process = request.node.get_closest_marker("in_process") is not None

    def make(**settings) -> Site:
        if in_process:
            settings.setdefault("isolate_jobs", False)
        site = Site(tmp_path, **settings)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()


@pytest.fixture
def site(make_site):
    return make_site()
