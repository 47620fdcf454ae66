"""The ``fileproc`` command run for real: ``python -m fileproc_wsgi.cli`` in a subprocess,
configured by ``FILEPROC_*`` variables, against a SQLite store the test also reads."""

from __future__ import annotations

import datetime
import json
import os
import selectors
import subprocess
import sys
import time

import pytest
from webob import Request

from fileproc_wsgi.cli import main
from fileproc_wsgi.config import Config
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.store import InstructionStore
from support import halves, write

FILEPROC = [sys.executable, "-m", "fileproc_wsgi.cli"]


def _checksum(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    media = tmp_path / "media"
    media.mkdir()
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith("FILEPROC_")},
        "FILEPROC_SOURCE_ROOTS": f"default={media}",
        "FILEPROC_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}",
        "FILEPROC_STORAGE": str(tmp_path / "results"),
    }


@pytest.fixture
def store(env):
    store = InstructionStore(env["FILEPROC_DATABASE_URL"])
    yield store
    store.dispose()


def fileproc(env, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FILEPROC, *arguments], env=env, capture_output=True, text=True, timeout=60)


def _add(store: InstructionStore, n: int) -> str:
    key = _checksum(n)
    store.add(key, f"source a{n}.png", source=f"a{n}.png", output_format="png", width=None, height=None)
    return key


def _failed(store: InstructionStore, n: int, *, retry_in: float | None) -> str:
    key = _add(store, n)
    retry_at = None if retry_in is None else store.now() + retry_in
    store.fail(
        key,
        store.claim(key, lease=60),
        f"reason {n}",
        retry_at=retry_at,
        status=404 if retry_in is None else 503,
    )
    return key


def _states(store: InstructionStore, keys) -> list[tuple[str, int]]:
    return [(job.state, job.attempts) for job in map(store.get, keys)]


def test_retry_resets_the_failed_jobs_given(env, store):
    permanent, transient = _failed(store, 1, retry_in=None), _failed(store, 2, retry_in=600)
    untouched = _failed(store, 3, retry_in=None)
    done = _add(store, 4)
    store.complete(
        done,
        store.claim(done, lease=60),
        result_key="00/x.png",
        content_type="image/png",
        width=1,
        height=1,
        result_bytes=1,
    )
    result = fileproc(env, "retry", permanent, transient, done, permanent)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 failed jobs reset to pending\n"
    assert result.stderr == f"fileproc: {done} is done, not failed; left as it is\n"
    assert _states(store, [permanent, transient, untouched, done]) == [
        ("pending", 0),
        ("pending", 0),
        ("failed", 1),
        ("done", 1),
    ]
    job = store.get(permanent)
    assert (job.reason, job.failure_status, job.retry_at) == (None, None, None)


def test_retry_all_failed(env, store):
    keys = [_failed(store, n, retry_in=None if n % 2 else 60) for n in range(5)]
    working = _add(store, 9)
    store.claim(working, lease=60)
    result = fileproc(env, "retry", "--all-failed")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "5 failed jobs reset to pending\n"
    assert {state for state, _ in _states(store, keys)} == {"pending"}
    assert store.get(working).state == "working", "a job being made is not a failure"
    again = fileproc(env, "retry", "--all-failed")
    assert again.stdout == "0 failed jobs reset to pending\n"


def test_retry_of_an_unknown_checksum_says_so(env, store):
    failed = _failed(store, 1, retry_in=None)
    result = fileproc(env, "retry", failed, _checksum(77))
    assert result.returncode == 1
    assert result.stdout == "1 failed job reset to pending\n"
    assert result.stderr == f"fileproc: {_checksum(77)}: no instructions registered under it\n"
    assert store.get(failed).state == "pending"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param([], "give the checksums of failed jobs, or --all-failed", id="nothing"),
        pytest.param([_checksum(1), "--all-failed"], "(not both)", id="both"),
        pytest.param(["0123"], "not a checksum (32 hex digits): 0123", id="malformed"),
        pytest.param(["../" + "0" * 29], "not a checksum", id="traversal"),
    ],
)
def test_retry_usage_errors(env, store, arguments, message):
    failed = _failed(store, 1, retry_in=None)
    result = fileproc(env, "retry", *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert store.get(failed).state == "failed"


def _shown(env, checksum: str) -> dict:
    result = fileproc(env, "show", checksum)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_show_has_attempts_reason_and_when_it_is_tried_again(env, store):
    permanent, transient = _failed(store, 1, retry_in=None), _failed(store, 2, retry_in=600)
    pending = _add(store, 3)

    shown = _shown(env, permanent)
    assert (shown["state"], shown["attempts"], shown["reason"], shown["failure_status"]) == (
        "failed",
        1,
        "reason 1",
        404,
    )
    assert shown["retry_at"] is None
    assert shown["next_attempt"] == "never by itself: a permanent failure; `fileproc retry` resets it"

    shown = _shown(env, transient)
    retry_at = store.get(transient).retry_at
    expected = datetime.datetime.fromtimestamp(retry_at, datetime.UTC).isoformat(timespec="seconds")
    assert (shown["attempts"], shown["failure_status"], shown["retry_at"]) == (1, 503, expected)
    assert shown["next_attempt"].startswith(f"on the first request after {expected} (in ")
    assert 590 <= int(shown["next_attempt"].rsplit("(in ", 1)[1].split()[0]) <= 600
    assert datetime.datetime.fromisoformat(shown["created_at"]).tzinfo is not None

    shown = _shown(env, pending)
    assert (shown["state"], shown["attempts"], shown["next_attempt"]) == ("pending", 0, None)


def test_a_failure_seen_by_the_server_is_shown_and_retried(env, tmp_path):
    media = tmp_path / "media"
    write(media, "a.png", halves(40, 20))
    assert fileproc(env, "migrate").returncode == 0  # register adds to a store, it never makes one
    registered = fileproc(env, "register", "a.png | fit 20x")
    assert registered.returncode == 0, registered.stderr
    representation = json.loads(registered.stdout)
    (media / "a.png").unlink()

    config = Config.from_env({name: value for name, value in env.items() if name.startswith("FILEPROC_")})
    app = FileProcessor(None, config)
    try:
        missing = Request.blank(representation["url"]).get_response(app)
        assert (missing.status_int, missing.text) == (404, "source 'a.png' does not exist\n")
        shown = _shown(env, representation["checksum"])
        assert (shown["state"], shown["attempts"], shown["reason"]) == (
            "failed",
            1,
            "source 'a.png' does not exist",
        )
        assert shown["next_attempt"].startswith("never by itself")

        write(media, "a.png", halves(40, 20))
        assert Request.blank(representation["url"]).get_response(app).status_int == 404, "on record"
        retried = fileproc(env, "retry", representation["checksum"])
        assert retried.stdout == "1 failed job reset to pending\n"
        assert Request.blank(representation["url"]).get_response(app).status_int == 301
        assert _shown(env, representation["checksum"])["state"] == "done"
    finally:
        app.close()


def test_migrate_brings_a_new_database_to_the_schema_and_is_idempotent(env):
    first = fileproc(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("fileproc_jobs: upgraded from no revision to ")
    again = fileproc(env, "migrate")
    assert again.returncode == 0 and again.stdout.startswith("fileproc_jobs: already at revision ")
    store = InstructionStore(env["FILEPROC_DATABASE_URL"])
    try:
        assert store.count_by_state() == {}
    finally:
        store.dispose()


# --------------------------------------------------------------------------- finding the store


def _run_in(directory, env, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FILEPROC, *arguments], env=env, cwd=directory, capture_output=True, text=True, timeout=60
    )


def _bare_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("FILEPROC_")}


def _site(tmp_path):
    """A site run from its own directory with the embedded default, one job made."""
    site = tmp_path / "site"
    (site / "media").mkdir(parents=True)
    write(site / "media", "a.png", halves(40, 20))
    env = {**_bare_env(), "FILEPROC_SOURCE_ROOTS": "default=media"}
    assert _run_in(site, env, "migrate").returncode == 0
    registered = _run_in(site, env, "register", "a.png | fit 10x")
    assert registered.returncode == 0, registered.stderr
    assert _run_in(site, env, "warm").stdout.startswith("1 made")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return site, elsewhere


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["stats"], id="stats"),
        pytest.param(["stats", "--json"], id="stats-json"),
        pytest.param(["show", _checksum(1)], id="show"),
        pytest.param(["retry", "--all-failed"], id="retry"),
        pytest.param(["warm"], id="warm"),
        pytest.param(["gc"], id="gc"),
        pytest.param(["purge", "a.png"], id="purge"),
        pytest.param(["register", "a.png | fit 10x"], id="register"),
    ],
)
def test_a_command_where_no_store_exists_says_so_and_makes_none(tmp_path, arguments):
    done = _run_in(tmp_path, _bare_env(), *arguments)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"fileproc: error: no store at {tmp_path / '.fileproc' / 'fileproc.db'} (")
    assert "FILEPROC_DATABASE_URL or --config FILE" in done.stderr
    assert list(tmp_path.iterdir()) == [], "a command that found no store made one"


def test_the_embedded_default_is_the_working_directorys_and_stats_says_which(tmp_path):
    site, elsewhere = _site(tmp_path)
    here = _run_in(site, _bare_env(), "stats")
    assert here.stdout.splitlines()[:2] == [
        f"store: {site / '.fileproc' / 'fileproc.db'}",
        "jobs: 0 pending, 0 working, 1 done, 0 failed",
    ]
    assert _run_in(elsewhere, _bare_env(), "stats").returncode == 2
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "found_elsewhere"),
    [
        pytest.param("sqlite:///{site}/.fileproc/fileproc.db", True, id="absolute"),
        # SQLite (SQLAlchemy) reads a relative path against the working directory.
        pytest.param("sqlite:///.fileproc/fileproc.db", False, id="relative"),
    ],
)
def test_a_database_url_from_another_directory(tmp_path, url, found_elsewhere):
    site, elsewhere = _site(tmp_path)
    env = {**_bare_env(), "FILEPROC_DATABASE_URL": url.format(site=site)}
    done = _run_in(elsewhere, env, "stats", "--json")
    if found_elsewhere:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["states"] == {"done": 1}
    else:
        assert done.returncode == 2
        assert f"no store at {elsewhere / '.fileproc' / 'fileproc.db'}" in done.stderr
    assert list(elsewhere.iterdir()) == []


def _settings_file(site) -> str:
    (site / "fileproc.toml").write_text(
        "# paths relative to this file\n"
        'database_url = "sqlite:///.fileproc/fileproc.db"\n'
        'storage = ".fileproc/results"\n'
        'source_roots = { default = "media" }\n'
    )
    return str(site / "fileproc.toml")


@pytest.mark.parametrize("how", ["option-before", "option-after", "variable"])
def test_a_settings_file_finds_the_sites_store_and_sources_from_anywhere(tmp_path, how):
    site, elsewhere = _site(tmp_path)
    path = _settings_file(site)
    env = _bare_env()
    if how == "variable":
        env["FILEPROC_CONFIG"] = path
        before, after = [], []
    else:
        before, after = (["--config", path], []) if how == "option-before" else ([], ["--config", path])

    registered = _run_in(elsewhere, env, *before, "register", "a.png | fit 12x", *after)
    assert registered.returncode == 0, registered.stderr
    warmed = _run_in(elsewhere, env, *before, "warm", *after)
    assert warmed.stdout.startswith("1 made, 0 failed"), warmed.stdout + warmed.stderr
    stats = json.loads(_run_in(elsewhere, env, *before, "stats", "--json", *after).stdout)
    assert stats["store"] == str(site / ".fileproc" / "fileproc.db")
    assert stats["states"] == {"done": 2}
    assert len(list((site / ".fileproc" / "results").rglob("*.png"))) == 2
    assert list(elsewhere.iterdir()) == []


def test_a_settings_file_without_store_settings_keeps_its_store_beside_it(tmp_path):
    """The embedded default is the working directory's .fileproc; a settings file's is the
    one beside the file, so a command run from anywhere still finds the site's store."""
    site, elsewhere = _site(tmp_path)
    (site / "fileproc.toml").write_text('source_roots = { default = "media" }\n')
    path = str(site / "fileproc.toml")
    registered = _run_in(elsewhere, _bare_env(), "--config", path, "register", "a.png | fit 12x")
    assert registered.returncode == 0, registered.stderr
    stats = json.loads(_run_in(elsewhere, _bare_env(), "--config", path, "stats", "--json").stdout)
    assert stats["store"] == str(site / ".fileproc" / "fileproc.db")
    assert stats["states"] == {"done": 1, "pending": 1}
    assert _run_in(elsewhere, _bare_env(), "--config", path, "warm").stdout.startswith("1 made")
    assert len(list((site / ".fileproc" / "results").rglob("*.png"))) == 2
    assert list(elsewhere.iterdir()) == []


def test_a_variable_wins_over_the_settings_file(tmp_path):
    site, elsewhere = _site(tmp_path)
    env = {**_bare_env(), "FILEPROC_DATABASE_URL": f"sqlite:///{elsewhere / 'other.db'}"}
    done = _run_in(elsewhere, env, "--config", _settings_file(site), "stats")
    assert done.returncode == 2
    assert f"no store at {elsewhere / 'other.db'}" in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(None, "fileproc.toml: no such file", id="missing"),
        pytest.param("database_url = [", "fileproc.toml: not valid TOML", id="not-toml"),
        pytest.param('databse_url = "sqlite:///x.db"', "unknown setting 'databse_url'", id="unknown-key"),
        pytest.param("source_roots = 3", "source_roots must be a table", id="roots-not-a-table"),
        pytest.param(
            "max_source_bytes = 0", "max_source_bytes: expected a positive whole number", id="bad-value"
        ),
        pytest.param(
            'storage = "ftp://host/results"',
            "storage: expected 'file:///dir', a directory or 's3://bucket/prefix', got 'ftp://host/results'",
            id="storage-scheme",
        ),
    ],
)
def test_a_bad_settings_file_is_named_in_the_error(tmp_path, text, message):
    path = tmp_path / "fileproc.toml"
    if text is not None:
        path.write_text(text + "\n")
    done = _run_in(tmp_path, _bare_env(), "--config", str(path), "stats")
    assert done.returncode == 2
    assert done.stderr.startswith("fileproc: error: ") and str(path) in done.stderr
    assert message in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if text is None else ["fileproc.toml"])


def test_migrate_says_where_the_store_is(tmp_path):
    done = _run_in(tmp_path, _bare_env(), "migrate")
    assert done.stdout.rstrip().endswith(f"({tmp_path / '.fileproc' / 'fileproc.db'})")


@pytest.mark.parametrize("arguments", [["--help"], ["stats", "--help"]], ids=["command", "subcommand"])
def test_a_hosted_command_offers_no_settings_file_nor_demo(capsys, tmp_path, arguments):
    """Under manage.py or flask the host application's settings are the only ones: an
    option that is then refused, or a demo building its own site, is not offered."""
    config = Config(database_url=f"sqlite:///{tmp_path / 'fp.db'}", storage=str(tmp_path / "results"))
    with pytest.raises(SystemExit) as hosted:
        main(arguments, config=config, prog="manage.py fileproc")
    shown = capsys.readouterr().out
    assert hosted.value.code == 0 and shown.startswith("usage: manage.py fileproc")
    assert "--config" not in shown and "demo" not in shown
    if arguments == ["--help"]:
        assert all(word in shown for word in ("serve", "stats", "warm", "migrate"))
    with pytest.raises(SystemExit):
        main(arguments)
    assert "--config FILE" in capsys.readouterr().out


def test_a_hosted_command_refuses_a_settings_file_as_an_unknown_option(capsys, tmp_path):
    config = Config(database_url=f"sqlite:///{tmp_path / 'fp.db'}", storage=str(tmp_path / "results"))
    with pytest.raises(SystemExit) as refused:
        main(["stats", "--config", "site.toml"], config=config, prog="flask fileproc")
    assert refused.value.code == 2
    assert "unrecognized arguments: --config site.toml" in capsys.readouterr().err


@pytest.fixture
def without_pdfium(env, tmp_path) -> dict[str, str]:
    """``env`` on a host built without the pdf extra: pypdfium2 shadowed by a package that
    fails to import as an absent one does (child processes inherit it)."""
    shadow = tmp_path / "shadow" / "pypdfium2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'pypdfium2'\")\n")
    paths = [str(shadow.parent), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def test_check_says_nothing_is_missing_and_exits_0(env):
    done = fileproc(env, "check")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == "fileproc: every library and plugin that fileproc_wsgi can use is installed\n"


def test_check_names_each_missing_library_with_what_to_install_and_exits_1(without_pdfium):
    done = fileproc(without_pdfium, "check")
    assert done.returncode == 1, done.stderr
    assert done.stdout == "missing pdf: PDF sources need pypdfium2: pip install 'fileproc-wsgi[pdf]'\n"
    quiet = fileproc(without_pdfium, "check", "--quiet")
    assert (quiet.returncode, quiet.stdout) == (1, "")


@pytest.mark.integration
def test_serve_logs_what_is_missing_once_at_start(without_pdfium):
    from support import free_port

    port = free_port()
    server = subprocess.Popen(
        [*FILEPROC, "serve", "--port", str(port)],
        env=without_pdfium,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        with selectors.DefaultSelector() as selector:
            selector.register(server.stderr, selectors.EVENT_READ)
            while time.monotonic() < deadline and not any("Serving on" in line for line in lines):
                if selector.select(timeout=1):
                    line = server.stderr.readline()
                    if not line:
                        break
                    lines.append(line)
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stderr.close()
    warned = [line.split(" WARNING ", 1)[1].rstrip() for line in lines if " WARNING " in line]
    assert warned == ["missing pdf: PDF sources need pypdfium2: pip install 'fileproc-wsgi[pdf]'"], lines
