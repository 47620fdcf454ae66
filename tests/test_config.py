"""One frozen, validated Config from keywords, a mapping or FILEPROC_* variables."""

from __future__ import annotations

import dataclasses
import os

import pytest

from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import ConfigError


def test_embedded_default_needs_no_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config()
    assert config.database_url == f"sqlite:///{tmp_path}/.fileproc/fileproc.db"
    assert config.storage == f"file://{tmp_path}/.fileproc/results"
    assert dict(config.source_roots) == {"default": str(tmp_path)}
    assert (config.prefix, config.public_url, config.redirect_status) == ("/_fp", "/_fp/files/", 301)


def test_relative_paths_are_fixed_when_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config(source_roots={"default": "media"}, storage="out")
    monkeypatch.chdir("/")
    assert config.source_roots["default"] == str(tmp_path / "media")
    assert config.storage == f"file://{tmp_path}/out"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///site.db", "sqlite:///{here}/site.db", id="relative"),
        pytest.param(
            "sqlite+pysqlite:///db/x.db?timeout=5", "sqlite+pysqlite:///{here}/db/x.db?timeout=5", id="query"
        ),
        pytest.param("sqlite:////srv/x.db", "sqlite:////srv/x.db", id="absolute"),
        pytest.param("sqlite:///:memory:", "sqlite:///:memory:", id="memory"),
        pytest.param("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db", id="postgresql"),
    ],
)
def test_a_relative_sqlite_url_names_one_file_wherever_the_process_goes(tmp_path, monkeypatch, url, expected):
    monkeypatch.chdir(tmp_path)
    config = Config(database_url=url)
    monkeypatch.chdir("/")
    assert config.database_url == expected.format(here=tmp_path)


def test_config_is_frozen():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.prefix = "/x"
    with pytest.raises(TypeError):
        config.source_roots["evil"] = "/"


def test_from_mapping_matches_keywords():
    values = {"prefix": "/thumbs/", "redirect_status": 302, "allowed_hosts": ["CDN.example.com"]}
    config = Config.from_mapping(values)
    assert config == Config(prefix="/thumbs", redirect_status=302, allowed_hosts=("cdn.example.com",))
    assert Config.from_mapping({"PREFIX": "/x"}).prefix == "/x"


def test_from_env(tmp_path):
    environ = {
        "FILEPROC_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "FILEPROC_SOURCE_ROOTS": f"default={tmp_path},static={tmp_path}/static",
        "FILEPROC_ALLOWED_HOSTS": "a.example.com, *.b.example.com",
        "FILEPROC_MAX_SOURCE_PIXELS": "1000",
        "FILEPROC_WAIT_TIMEOUT": "2.5",
        "FILEPROC_SERVE_RESULTS": "yes",
        "FILEPROC_SECRET": "0123456789abcdef",
        "PATH": "/usr/bin",
    }
    config = Config.from_env(environ)
    assert config.database_url == f"sqlite:///{tmp_path}/x.db"
    assert dict(config.source_roots) == {"default": str(tmp_path), "static": f"{tmp_path}/static"}
    assert config.allowed_hosts == ("a.example.com", "*.b.example.com")
    assert (config.max_source_pixels, config.wait_timeout, config.serve_results) == (1000, 2.5, True)
    assert Config.from_env({"FILEPROC_SOURCE_ROOTS": '{"default": "/srv"}'}).source_roots == {
        "default": "/srv"
    }
    assert Config.from_env({}, prefix="/o").prefix == "/o"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(
            lambda: Config.from_mapping({"database": "x"}), "unknown setting 'database'", id="unknown-key"
        ),
        pytest.param(
            lambda: Config.from_env({"FILEPROC_DATABASE": "x"}),
            "unknown environment variable FILEPROC_DATABASE",
            id="unknown-env",
        ),
        pytest.param(
            lambda: Config.from_env({"FILEPROC_MAX_SOURCE_BYTES": "lots"}),
            "FILEPROC_MAX_SOURCE_BYTES: cannot read 'lots' as int",
            id="env-not-a-number",
        ),
        pytest.param(
            lambda: Config.from_env({"FILEPROC_SERVE_RESULTS": "maybe"}),
            "FILEPROC_SERVE_RESULTS: cannot read 'maybe'",
            id="env-not-a-bool",
        ),
        pytest.param(
            lambda: Config.from_env({"FILEPROC_SOURCE_ROOTS": "nodirectory"}),
            "FILEPROC_SOURCE_ROOTS: cannot read",
            id="env-bad-roots",
        ),
        pytest.param(lambda: Config(prefix="/"), "prefix: expected a URL path", id="empty-prefix"),
        pytest.param(lambda: Config(prefix="/a b"), "prefix: expected a URL path", id="prefix-with-space"),
        pytest.param(
            lambda: Config(redirect_status=200), "redirect_status: expected one of", id="redirect-status"
        ),
        pytest.param(lambda: Config(source_roots={"Media": "."}), "root name 'Media'", id="root-name"),
        pytest.param(
            lambda: Config(source_roots={"media": ""}), "root 'media' needs a directory", id="root-dir"
        ),
        pytest.param(
            lambda: Config(allowed_hosts=("exa mple.com",)), "allowed_hosts: 'exa mple.com'", id="host"
        ),
        pytest.param(lambda: Config(secret="short"), "secret: use at least 16 characters", id="secret"),
        pytest.param(lambda: Config(wait_timeout=0), "wait_timeout: expected seconds", id="wait-timeout"),
        pytest.param(
            lambda: Config(max_source_pixels=0), "max_source_pixels: expected a positive", id="limit"
        ),
        pytest.param(
            lambda: Config(max_source_bytes=True), "max_source_bytes: expected a positive", id="bool-limit"
        ),
        pytest.param(lambda: Config(storage="file://"), "storage: expected", id="storage"),
    ],
)
def test_bad_settings_name_the_setting(build, message):
    with pytest.raises(ConfigError) as raised:
        build()
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_nothing_is_read_at_import(tmp_path):
    import subprocess
    import sys

    code = "import fileproc_wsgi, fileproc_wsgi.config, fileproc_wsgi.middleware, fileproc_wsgi.registrar"
    environ = {**os.environ, "FILEPROC_BOGUS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / ".fileproc").exists()


@pytest.mark.parametrize(
    ("subject", "size", "rendered", "message"),
    [
        pytest.param("source 'a.heic'", (200, 100), False, "source 'a.heic' has 200x100", id="held"),
        pytest.param(
            "page 1 of 'a.pdf'", (100, 200), True, "page 1 of 'a.pdf' would render at 100x200", id="drawn"
        ),
    ],
)
def test_check_source_pixels_names_the_source_and_the_limit(subject, size, rendered, message):
    from fileproc_wsgi.errors import LimitError

    config = Config(max_source_pixels=10_000)
    config.check_source_pixels(subject, 100, 100, rendered=rendered)  # at the limit: fine
    with pytest.raises(LimitError) as raised:
        config.check_source_pixels(subject, *size, rendered=rendered)
    assert str(raised.value) == f"{message} = 20000 pixels, more than max_source_pixels=10000"
