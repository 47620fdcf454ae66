"""fileproc_django without a FILEPROCESSOR setting: the project's database, MEDIA_ROOT and
default storage; ``manage.py migrate``, ``manage.py check`` and ``manage.py fileproc``.

The end-to-end tests write a small Django project into the test's directory and run its
``manage.py`` in subprocesses, from the project's directory and from another one, as a
developer would. The others run in this process on the settings test_django.py
configured, overriding what each test is about.
"""

from __future__ import annotations

import os
import pathlib
import re
import sqlite3
import subprocess
import sys
import textwrap

import botocore.config
import pytest
import sqlalchemy
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import ConnectionHandler
from django.test.utils import override_settings
from storages.backends.s3 import S3Storage

from fileproc_django import conf
from support import free_port, halves, write
from test_django import render

# Replacing DATABASES in a running process is what Django warns about; the tests below
# only read the settings back, never open Django's own connections through them.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")

BLOCK = "{% load fileprocessor %}{% fileprocessor %}photo.jpg | fit 120x{% endfileprocessor %}"


def _project(tmp_path, databases: str, *, extra: str = "") -> os.PathLike:
    """A Django project with no FILEPROCESSOR setting, a photo in its MEDIA_ROOT."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "manage.py").write_text(
        textwrap.dedent(
            """\
            import os, sys
            from django.core.management import execute_from_command_line

            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")
            execute_from_command_line(sys.argv)
            """
        )
    )
    (project / "site_settings.py").write_text(
        textwrap.dedent(
            f"""\
            from pathlib import Path

            BASE_DIR = Path(__file__).resolve().parent
            SECRET_KEY = "tests-only"
            DEBUG = True
            ALLOWED_HOSTS = ["localhost"]
            INSTALLED_APPS = ["django.contrib.contenttypes", "fileproc_django"]
            ROOT_URLCONF = "site_urls"
            TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates"}}]
            DATABASES = {databases}
            MEDIA_ROOT = BASE_DIR / "media"
            MEDIA_URL = "/media/"
            USE_TZ = True
            """
        )
        + extra
    )
    (project / "site_urls.py").write_text("urlpatterns = []\n")
    write(project / "media", "photo.jpg", halves(600, 400), quality=90)
    (tmp_path / "elsewhere").mkdir()
    return project


def _manage(project, *arguments: str, cwd=None, code: str | None = None) -> subprocess.CompletedProcess:
    """``python manage.py ARGUMENTS`` (or ``python -c CODE`` with the project's settings)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FILEPROC_", "DJANGO_"))}
    env["DJANGO_SETTINGS_MODULE"] = "site_settings"
    env["PYTHONPATH"] = os.pathsep.join([str(project), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = (
        [sys.executable, str(project / "manage.py"), *arguments]
        if code is None
        else [
            sys.executable,
            "-c",
            code,
        ]
    )
    done = subprocess.run(command, cwd=cwd or project, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


# Renders the block in the project and requests its image through wrap(): prints the tag,
# then the response's status and where it was sent.
RENDER_AND_REQUEST = f"""
import django, re
django.setup()
from django.core.wsgi import get_wsgi_application
from django.template import engines
from webob import Request
import fileproc_django

html = engines["django"].from_string({BLOCK!r}).render()
print(html)
app = fileproc_django.wrap(get_wsgi_application())
response = Request.blank(re.search(r'src="([^"]+)"', html).group(1)).get_response(app)
print(response.status_int, response.location)
result = Request.blank(response.location).get_response(app)
print(result.status_int, result.content_type)
"""


def _postgres_databases(url: str, password: str) -> str:
    parsed = sqlalchemy.make_url(url)
    return repr(
        {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parsed.database,
                "USER": parsed.username,
                # The test server trusts every local connection, so any password passes;
                # one with URL delimiters shows the URL is built, not formatted.
                "PASSWORD": password,
                "HOST": parsed.host,
                "PORT": str(parsed.port),
                "OPTIONS": {"application_name": "fileproc tests", "isolation_level": 1},
            }
        }
    )


def test_a_project_without_settings_keeps_its_jobs_in_its_own_database(tmp_path, database_url):
    backend = sqlalchemy.make_url(database_url).get_backend_name()
    if backend == "sqlite":  # where Django projects keep it, not the fixture's file
        databases = '{"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}'
    else:
        databases = _postgres_databases(database_url, "p@ss:w/rd#?")
    project = _project(tmp_path, databases)

    migrated = _manage(project, "migrate")
    assert "fileproc_jobs: upgraded from no revision to" in migrated.stdout
    assert "fileproc_jobs" not in _manage(project, "migrate").stdout, "a second migrate has nothing to do"
    if backend == "sqlite":
        with sqlite3.connect(project / "db.sqlite3") as database:
            tables = {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"fileproc_jobs", "fileproc_alembic_version", "django_migrations"} <= tables

    page = _manage(project, code=RENDER_AND_REQUEST).stdout.splitlines()
    assert page[0].startswith('<img src="/_fp/') and 'width="120" height="80"' in page[0]
    status, location = page[1].split()
    # Results sit under MEDIA_ROOT/fileproc and the middleware serves them itself, so
    # they show with DEBUG on or off, whatever serves MEDIA_URL.
    assert status == "301" and location.startswith("/_fp/files/")
    assert page[2] == "200 image/jpeg"
    assert [
        path.parent.parent.name for path in (project / "media").rglob("*.jpg") if path.name != "photo.jpg"
    ] == ["fileproc"]

    stats = _manage(project, "fileproc", "stats", cwd=tmp_path / "elsewhere").stdout
    assert "0 pending, 0 working, 1 done, 0 failed" in stats, stats
    assert not list((tmp_path / "elsewhere").iterdir()), "a command run elsewhere made a store there"
    assert not (project / ".fileproc").exists()


def test_manage_py_fileproc_takes_djangos_own_options_before_or_after_the_command(tmp_path):
    databases = '{"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}'
    project = _project(tmp_path, databases)
    (tmp_path / "prod").mkdir()
    (tmp_path / "prod" / "prod_settings.py").write_text(
        'from site_settings import *\n\nDATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", '
        '"NAME": BASE_DIR / "prod.sqlite3"}}\n'
    )
    prod = ["--settings=prod_settings", "--pythonpath", str(tmp_path / "prod")]
    migrated = _manage(project, "fileproc", *prod, "migrate", "-v", "2", "--traceback", "--no-color")
    assert "fileproc_jobs: upgraded from no revision" in migrated.stdout
    assert "fileproc_jobs" in _tables(project / "prod.sqlite3"), "--settings was applied"
    assert not (project / "db.sqlite3").exists()
    stats = _manage(project, "fileproc", "stats", "--json", "-v2", "--settings", "prod_settings", *prod[1:])
    assert '"states": {}' in stats.stdout, stats.stdout


def test_a_projects_own_tests_keep_their_jobs_in_the_test_database(tmp_path):
    databases = '{"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}'
    project = _project(tmp_path, databases)
    (project / "test_pages.py").write_text(
        textwrap.dedent(
            f"""\
            from django.template import engines
            from django.test import TestCase

            from fileproc_django.conf import get_registrar


            class Pages(TestCase):
                def test_a_thumbnail_is_registered(self):
                    html = engines["django"].from_string({BLOCK!r}).render()
                    self.assertIn('width="120" height="80"', html)
                    self.assertEqual(get_registrar().store.count_by_state(), {{"pending": 1}})
            """
        )
    )
    tested = subprocess.run(
        [sys.executable, "manage.py", "test", "test_pages", "-v", "2"],
        cwd=project,
        env={key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Ran 1 test" in tested.stderr
    assert not (project / "db.sqlite3").exists(), "the tests touched the development database"


DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "django.md"


def _testing_recipe() -> str:
    """The test case of docs/django.md's Testing section, as written."""
    section = DOCS.read_text(encoding="utf-8").split("\n## Testing\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def _project_with_a_page(tmp_path, body: str) -> os.PathLike:
    databases = '{"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}'
    project = _project(tmp_path, databases)
    (project / "site_urls.py").write_text(
        textwrap.dedent(
            f"""\
            from django.http import HttpResponse
            from django.template import engines
            from django.urls import path

            def gallery(request):
                return HttpResponse(engines["django"].from_string({body!r}).render())

            urlpatterns = [path("", gallery)]
            """
        )
    )
    return project


def _run_tests(project, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "test", "test_pages", *options],
        cwd=project,
        env={key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "FILEPROC_"))},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_documented_install_steps_work_in_a_new_startproject(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "FILEPROC_"))}
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite"],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=60,
    )
    project = tmp_path / "mysite"
    install = DOCS.read_text(encoding="utf-8").split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    steps = re.search(r"```python\n# settings.py\n(.*?)```", install, re.DOTALL).group(1)
    settings_py = project / "mysite" / "settings.py"
    settings_py.write_text(
        settings_py.read_text().replace(
            "INSTALLED_APPS = [\n", 'INSTALLED_APPS = [\n    "fileproc_django",\n'
        )
        + "\n"
        + re.sub(r"INSTALLED_APPS = \[.*?\]\n", "", steps, flags=re.DOTALL)
    )
    for command in (["makemigrations"], ["migrate"], ["check"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    assert "System check identified no issues" in done.stdout, done.stdout + done.stderr


def test_the_documented_test_of_a_thumbnail_passes_in_a_project(tmp_path):
    project = _project_with_a_page(tmp_path, BLOCK)
    (project / "test_pages.py").write_text(_testing_recipe())
    tested = _run_tests(project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Ran 1 test" in tested.stderr


def test_a_projects_tests_catch_a_bad_block_with_debug_mode(tmp_path):
    bad = BLOCK.replace("fit 120x", "fit 10by")
    project = _project_with_a_page(tmp_path, bad)
    (project / "test_pages.py").write_text(
        textwrap.dedent(
            """\
            from django.test import TestCase

            class Pages(TestCase):
                def test_the_gallery(self):
                    self.assertEqual(self.client.get("/").status_code, 200)
            """
        )
    )
    assert _run_tests(project).returncode == 0, "the test runner's DEBUG = False: the empty branch"
    tested = _run_tests(project, "--debug-mode")
    assert tested.returncode == 1, tested.stdout + tested.stderr
    assert "InstructionError" in tested.stderr and "step 'fit'" in tested.stderr


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({}, {}, id="all-from-django"),
        pytest.param(
            {"database_url": "sqlite:////srv/fp.db"},
            {"database_url": "sqlite:////srv/fp.db"},
            id="database_url",
        ),
        pytest.param({"storage": "s3://bucket/thumbs"}, {"storage": "s3://bucket/thumbs"}, id="storage"),
        pytest.param(
            {"SOURCE_ROOTS": {"media": "/srv/media"}},
            {"source_roots": {"media": "/srv/media", "default": "django:default"}},
            id="source_roots-keep-the-default-root",
        ),
        pytest.param(
            {"source_roots": {"default": "/srv/media"}},
            {"source_roots": {"default": "/srv/media"}},
            id="source_roots-replace-the-default-root",
        ),
    ],
)
def test_each_fileprocessor_key_replaces_just_its_default(tmp_path, overrides, expected):
    django_defaults = {
        "database_url": f"sqlite:///{tmp_path / 'site.db'}",
        "storage": f"file://{tmp_path / 'media' / 'fileproc'}",
        "source_roots": {"default": "django:default"},
    }
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "site.db"}}
    with override_settings(DATABASES=databases, MEDIA_ROOT=str(tmp_path / "media"), FILEPROCESSOR=overrides):
        config = conf.config_from_settings()
    assert {name: getattr(config, name) for name in django_defaults} == {**django_defaults, **expected}
    assert config.public_url == "/_fp/files/"


def _url(settings_dict: dict, alias: str = "default") -> str:
    return conf.database_url_for(ConnectionHandler({alias: settings_dict})[alias])


def test_the_database_url_follows_djangos_connection_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sqlite = "django.db.backends.sqlite3"
    assert _url({"ENGINE": sqlite, "NAME": "db.sqlite3"}) == f"sqlite:///{tmp_path / 'db.sqlite3'}"
    postgres = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "site",
        "USER": "web@site",
        "PASSWORD": "p@ss/w:rd",
        "HOST": "/run/postgresql",
        "PORT": 6432,
        "OPTIONS": {"sslmode": "require", "isolation_level": 2, "pool": True},
    }
    url = sqlalchemy.make_url(_url(postgres))
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "web@site",
        "p@ss/w:rd",
        None,
        6432,
        "site",
    )
    assert dict(url.query) == {"sslmode": "require", "host": "/run/postgresql"}


def test_an_in_memory_test_database_gives_the_store_one_of_its_own():
    url = _url(
        {"ENGINE": "django.db.backends.sqlite3", "NAME": "file:memorydb_default?mode=memory&cache=shared"}
    )
    assert conf.in_memory(url)
    # Two engines of the process see the same tables; Django's connection is not one of them.
    first, second = sqlalchemy.create_engine(url), sqlalchemy.create_engine(url)
    try:
        with first.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE seen (x INTEGER)"))
        with second.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT count(*) FROM seen")).scalar() == 0
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.parametrize(
    ("settings", "check_id", "message"),
    [
        pytest.param(
            {"DATABASES": {"default": {"ENGINE": "django.db.backends.dummy"}}},
            "fileproc_django.E003",
            "DATABASES['default']: the store runs on SQLite or PostgreSQL, and this database uses "
            "django.db.backends.dummy; set FILEPROCESSOR['database_url']",
            id="unsupported-engine",
        ),
        pytest.param(
            {"FILEPROCESSOR_DATABASE": "replica"},
            "fileproc_django.E003",
            "FILEPROCESSOR_DATABASE: the store goes in the project's database 'replica', which DATABASES "
            "does not define (aliases: default)",
            id="unknown-alias",
        ),
        pytest.param(
            {"MEDIA_ROOT": ""},
            "fileproc_django.E004",
            "MEDIA_ROOT: results go under MEDIA_ROOT/fileproc, and MEDIA_ROOT is not set; set it, or "
            "FILEPROCESSOR['storage']",
            id="no-media-root",
        ),
    ],
)
def test_a_default_django_cannot_give_is_an_error_naming_the_way_out(tmp_path, settings, check_id, message):
    base = {
        "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "site.db"}},
        "MEDIA_ROOT": str(tmp_path),
    }
    with override_settings(**{**base, **settings}):
        found = [(m.id, m.msg) for m in checks.run_checks() if m.id.startswith("fileproc_django.")]
        assert [(i, m.startswith(message)) for i, m in found] == [(check_id, True)], found
        with pytest.raises(ImproperlyConfigured, match="^" + re.escape(message)):
            render("{% fileprocessor %}photo.jpg{% endfileprocessor %}")


# manage.py check in a process where importing the given libraries fails, as where they
# were never installed.
CHECK_WITHOUT = """
import sys
for name in sys.argv[1:]:
    if name == "no-libreoffice":  # a host without the LibreOffice packages
        from fileproc_wsgi.engines import soffice
        soffice.find = lambda: None
    elif name == "no-user-namespaces":  # as under Docker's default seccomp profile
        from fileproc_wsgi.engines import soffice
        soffice._works = lambda command: "unshare" not in command[0]
    else:
        sys.modules[name] = None
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "check"])
"""


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        pytest.param((), [], id="everything-installed"),
        pytest.param(("pypdfium2",), [("W010", "pip install 'fileproc-wsgi[pdf]'")], id="pdf"),
        pytest.param(
            ("av", "wand"),
            [("W011", "pip install 'fileproc-wsgi[video]'"), ("W012", "pip install 'fileproc-wsgi[wand]'")],
            id="video-and-imagemagick",
        ),
        pytest.param(
            ("pillow_lunasvg", "rawpy", "pillow_jxl", "no-libreoffice"),
            [
                ("W018", "pip install 'fileproc-wsgi[svg]'; or silence fileproc_django.W018"),
                ("W020", "pip install 'fileproc-wsgi[raw]'; or silence fileproc_django.W020"),
                ("W021", "pip install 'fileproc-wsgi[jxl]'; or silence fileproc_django.W021"),
                ("W022", "apt-get install --no-install-recommends libreoffice-writer-nogui"),
            ],
            id="each-library-its-own-id",
        ),
        pytest.param(
            ("no-user-namespaces",),
            [("W025", "allow unprivileged user namespaces")],
            id="office-without-a-network-namespace",
        ),
    ],
)
def test_check_names_the_extra_for_each_missing_engine_once(tmp_path, missing, expected):
    databases = '{"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}'
    project = _project(tmp_path, databases)
    done = _manage(project, code=CHECK_WITHOUT.replace("sys.argv[1:]", repr(list(missing))))
    output = done.stdout + done.stderr
    found = re.findall(r"\(fileproc_django\.(\w+)\)", output)
    assert found == [check_id for check_id, _ in expected], output
    for _, hint in expected:
        assert hint in output
    if not expected:
        assert "System check identified no issues" in output


def _explicit(tmp_path, **values) -> dict:
    return {"database_url": f"sqlite:///{tmp_path / 'fp.db'}", "storage": str(tmp_path / "results"), **values}


def test_check_warns_once_for_each_source_root_that_cannot_be_read(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "a-file").write_bytes(b"")
    roots = {
        "default": str(tmp_path / "media"),
        "gone": str(tmp_path / "gone"),
        "file": str(tmp_path / "a-file"),
        "fields": "django:nowhere",
    }
    with override_settings(FILEPROCESSOR=_explicit(tmp_path, source_roots=roots)):
        found = sorted(
            (m.id, m.level, m.msg) for m in checks.run_checks() if m.id.startswith("fileproc_django.")
        )
    assert found == [
        (
            "fileproc_django.E005",
            checks.ERROR,
            "source_roots['fields']: source root 'django:nowhere': expected an alias of STORAGES "
            "(default, staticfiles) or a model field as app_label.Model.field",
        ),
        (
            "fileproc_django.W001",
            checks.WARNING,
            f"source_roots['gone']: the directory {tmp_path / 'gone'} does not exist, so every source "
            "under it will be refused as missing",
        ),
        (
            "fileproc_django.W002",
            checks.WARNING,
            f"source_roots['file']: {tmp_path / 'a-file'} is not a directory",
        ),
    ]


def test_check_looks_in_the_directory_of_a_file_system_storage(tmp_path):
    # The default storage is a FileSystemStorage on MEDIA_ROOT. (Not STORAGES with OPTIONS:
    # Django 4.2's override_settings drops the default storage's OPTIONS.)
    with override_settings(MEDIA_ROOT=str(tmp_path / "uploads"), FILEPROCESSOR=_explicit(tmp_path)):
        # A new project: the storage makes MEDIA_ROOT on the first upload.
        assert [m for m in checks.run_checks() if m.id.startswith("fileproc_django.")] == []
        (tmp_path / "uploads").write_bytes(b"")
        found = [(m.id, m.msg) for m in checks.run_checks() if m.id.startswith("fileproc_django.")]
        assert found == [
            (
                "fileproc_django.W002",
                f"source_roots['default'] (Django storage 'default' (FileSystemStorage)): "
                f"{tmp_path / 'uploads'} is not a directory",
            )
        ]


class UnreachableS3(S3Storage):
    """django-storages' S3 backend pointed at a port nothing listens on, asking once."""

    def __init__(self, **options):
        super().__init__(
            bucket_name="photos",
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            access_key="testing",
            secret_key="testing",
            region_name="us-east-1",
            client_config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2),
            **options,
        )


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        pytest.param("django.core.files.storage.InMemoryStorage", [], id="answers"),
        pytest.param(
            f"{__name__}.UnreachableS3",
            [
                (
                    "fileproc_django.W004",
                    "source_roots['default']: Django storage 'default' (UnreachableS3) "
                    "did not answer a lookup",
                )
            ],
            id="unreachable",
        ),
    ],
)
def test_check_deploy_asks_a_remote_storage_once(tmp_path, backend, expected):
    storages = {
        "default": {"BACKEND": backend},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=storages, FILEPROCESSOR=_explicit(tmp_path)):  # root: django:default
        everyday = [m for m in checks.run_checks() if m.id.startswith("fileproc_django.")]
        deploy = [
            (m.id, m.msg[: len(expected[0][1])] if expected else m.msg)
            for m in checks.run_checks(include_deployment_checks=True)
            if m.id.startswith("fileproc_django.")
        ]
    assert everyday == [], "the everyday checks make no request"
    assert deploy == expected


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as database:
        return {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_migrate_upgrades_the_store_on_its_own_database_alias_only(tmp_path):
    databases = (
        '{"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"},'
        ' "jobs": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "jobs.sqlite3"}}'
    )
    project = _project(tmp_path, databases, extra='FILEPROCESSOR_DATABASE = "jobs"\n')
    _manage(project, "migrate")
    assert "fileproc_jobs" not in _tables(project / "db.sqlite3")
    assert (
        "fileproc_jobs: upgraded from no revision" in _manage(project, "migrate", "--database", "jobs").stdout
    )
    assert "fileproc_jobs" in _tables(project / "jobs.sqlite3")
    # flush sends post_migrate as well; only migrate migrates.
    assert (
        "fileproc_jobs:"
        not in _manage(project, "flush", "--database", "jobs", "--no-input", "-v", "2").stdout
    )


def test_the_document_cache_default_depends_on_neither_the_directory_nor_media_root(tmp_path, monkeypatch):
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "site.db"}}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    places = []
    for directory in (tmp_path, tmp_path / "media"):
        directory.mkdir(exist_ok=True)
        monkeypatch.chdir(directory)
        with override_settings(DATABASES=databases, MEDIA_ROOT=str(tmp_path / "media"), FILEPROCESSOR={}):
            places.append(conf.config_from_settings().document_cache)
    assert places == [str(tmp_path / "cache" / "fileproc" / "documents")] * 2
    with override_settings(
        DATABASES=databases, MEDIA_ROOT=str(tmp_path / "media"), FILEPROCESSOR={"document_cache": "/srv/pdfs"}
    ):
        assert conf.config_from_settings().document_cache == "/srv/pdfs"


def test_a_settings_file_keeps_the_document_cache_beside_it(tmp_path, monkeypatch):
    from fileproc_wsgi.settings_file import config_from_file

    site = tmp_path / "site"
    site.mkdir()
    (site / "fileproc.toml").write_text('document_cache = "pdfs"\n')
    (tmp_path / "other.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert config_from_file(str(site / "fileproc.toml"), {}).document_cache == str(site / "pdfs")
    monkeypatch.chdir(site)
    other = config_from_file(str(tmp_path / "other.toml"), {})
    assert other.document_cache == str(tmp_path / ".fileproc" / "documents")
