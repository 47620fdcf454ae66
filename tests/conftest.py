"""Shared fixtures: PostgreSQL servers (started by tests/support.py), a fresh database per
test on each backend, embedded sites; and the ``integration`` mark on every test that
starts another process to talk to, so that ``pytest -m "not integration"`` is the fast layer.

A server that cannot start fails the tests that need it; it never skips them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from support import PostgreSQL, ServerError, Site

# Integration tests start another process to talk to: PostgreSQL, moto's S3 server,
# gunicorn or ``fileproc serve``, LibreOffice, Chromium. Collection sees the fixtures a
# test asks for by name, so a fixture that starts one marks every test using it (``server``
# is test_remote's ``fileproc serve`` and test_metrics' gunicorn).
SERVER_FIXTURES = frozenset({"postgres_server", "own_postgres", "s3_endpoint", "server"})
# Parameters for which a fixture starts one through request.getfixturevalue, out of
# collection's sight: database_url's PostgreSQL, test_django_storages' S3 storage.
SERVER_PARAMETERS = frozenset({("database_url", "postgresql"), ("storage", "s3")})


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "in_process: the test watches the pipeline from inside (a spy, a patched library), "
        "so its sites run jobs in the test's own process (isolate_jobs=False)",
    )


def pytest_collection_modifyitems(items):
    for item in items:
        parameters = item.callspec.params if hasattr(item, "callspec") else {}
        if SERVER_FIXTURES.intersection(item.fixturenames) or any(
            parameters.get(name) == value for name, value in SERVER_PARAMETERS
        ):
            item.add_marker(pytest.mark.integration)


def _postgresql() -> Iterator[PostgreSQL]:
    """A started server, closed at the end."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(PostgreSQL())
            server.start()
        except ServerError as error:
            pytest.fail(f"PostgreSQL for tests: {error}", pytrace=False)
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgreSQL]:
    """A throw-away PostgreSQL 15 server on a free loopback port for the session."""
    yield from _postgresql()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgreSQL]:
    """A PostgreSQL server of the module's own, which its tests may stop and start again
    (an outage) without touching any other test's database."""
    yield from _postgresql()


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL of an empty database of its own for one test, on each supported backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fileproc.db'}"
    try:
        return request.getfixturevalue("postgres_server").database()
    except ServerError as error:
        pytest.fail(f"PostgreSQL for tests: {error}", pytrace=False)


@pytest.fixture
def make_site(tmp_path, request):
    """Build embedded-default installations in this test's directory; closed afterwards."""
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
