"""fileproc_flask in a real Flask app: through the test client, and ``flask fileproc`` run
as a user runs it, in a new process started from another directory."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from flask import Flask, render_template_string

from fileproc_flask import FileProcessor, config_from_app
from fileproc_wsgi import ConfigError, InstructionError
from support import decode, halves, write

# A site as a user writes one: an app factory in a module file, a FileProcessor made once.
SITE = """
import os

from flask import Flask, render_template_string

from fileproc_flask import FileProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
fileproc = FileProcessor()
PAGE = '{% fileprocessor alt="a photo" %}photo.jpg | fit 120x120{% endfileprocessor %}'


def create_app():
    app = Flask(__name__, root_path=HERE, instance_path=os.path.join(HERE, "instance"))
    app.config["UPLOAD_FOLDER"] = os.path.join(HERE, "uploads")
    app.config.from_prefixed_env()  # FLASK_FILEPROC_* variables, as many sites do
    fileproc.init_app(app)
    app.get("/")(lambda: render_template_string(PAGE))
    return app
"""

_IMG = re.compile(r'<img src="([^"]+)" width="(\d+)" height="(\d+)" alt="([^"]*)"')


@pytest.fixture
def site(tmp_path):
    """A site module on disk with one upload, loaded as ``flask --app`` would."""
    directory = tmp_path / "site"
    directory.mkdir()
    (directory / "photo_site.py").write_text(SITE)
    write(directory / "uploads", "photo.jpg", halves(600, 400))
    name = f"photo_site_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, directory / "photo_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    apps = []

    def create_app():
        apps.append(module.create_app())
        return apps[-1]

    module.make = create_app
    yield module
    for app in apps:
        module.fileproc.close(app)


@pytest.fixture
def make_app(tmp_path):
    """``make_app(**config)``: a Flask app rooted in its own directory, with a FileProcessor
    whose connections are closed after the test."""
    made = []

    def make(name: str = "app", *, init: bool = True, **config) -> Flask:
        root = tmp_path / name
        write(root / "static", "photo.jpg", halves(600, 400))
        app = Flask(name, root_path=str(root), instance_path=str(root / "instance"))
        app.config.update(config)
        if init:
            fileproc = FileProcessor()
            fileproc.init_app(app)
            made.append((fileproc, app))
        return app

    yield make
    for fileproc, app in made:
        fileproc.close(app)


def _flask(*arguments: str, cwd) -> subprocess.CompletedProcess:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("FILEPROC_", "FLASK_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "flask", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _render(app: Flask, source: str, **context) -> str:
    with app.test_request_context():
        return render_template_string(source, **context)


def test_a_page_prints_sized_images_whose_urls_redirect_to_the_file(site, tmp_path):
    app = site.make()
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    [(url, width, height, alt)] = _IMG.findall(page)
    assert (width, height, alt) == ("120", "80", "a photo")
    results = tmp_path / "site" / "instance" / "fileproc" / "results"
    assert not results.exists() or not any(results.rglob("*.jpg")), "rendering processed nothing"

    redirect = client.get(url)
    assert redirect.status_code == 301
    result = client.get(redirect.location)
    assert result.status_code == 200
    assert decode(result.data).size == (120, 80)
    assert len(list(results.rglob("*.jpg"))) == 1


def _fenced(markdown: str, language: str, after: str) -> str:
    """The first ```language block after the text ``after``."""
    return re.search(rf"```{language}\n(.*?)```", markdown[markdown.index(after) :], re.S).group(1)


def test_the_templates_in_docs_flask_md_print_what_the_page_says(make_app, tmp_path):
    docs = (Path(__file__).parent.parent / "docs" / "flask.md").read_text()
    template = _fenced(docs, "jinja", "## In templates")
    printed = _fenced(docs, "html", "## In templates")
    write(tmp_path / "uploads", "ada.jpg", halves(600, 400))
    app = make_app(UPLOAD_FOLDER=str(tmp_path / "uploads"))
    write(tmp_path / "app" / "static" / "img", "hero.jpg", halves(1600, 900))

    def lines(html: str) -> list[str]:
        # The checksums follow the pictures' bytes, which the docs cannot know.
        return [
            re.sub(r"[0-9a-f]{32}", "<checksum>", line.strip()) for line in html.splitlines() if line.strip()
        ]

    assert lines(_render(app, template, user={"username": "ada", "picture": "ada.jpg"})) == lines(printed)
    without = _render(app, template, user={"username": "bob", "picture": None})
    assert lines(without)[0] == '<span class="initials">b</span>'
    assert '<span class="initials">b</span>' in docs


def test_two_apps_in_one_process_keep_their_own_store(make_app, tmp_path):
    first, second = make_app("first"), make_app("second")
    page = '{% fileprocessor alt="x" %}photo.jpg | fit 50x50{% endfileprocessor %}'
    [(url, *_)] = _IMG.findall(_render(first, page))
    assert second.test_client().get(url).status_code == 404, "the second app's store has not seen it"
    assert first.test_client().get(url).status_code == 301
    for app in (first, second):
        assert (
            app.extensions["fileproc"]
            .get_config(app)
            .database_url.startswith(f"sqlite:///{tmp_path / app.name / 'instance'}")
        )


def test_the_block_works_when_jinja_env_was_built_before_init_app(make_app):
    app = make_app(init=False)
    app.jinja_env.globals["touched"] = True  # builds the environment, with Flask's options
    FileProcessor(app)
    try:
        html = _render(app, '{% fileprocessor alt="x" %}photo.jpg | fit 60x60{% endfileprocessor %}')
    finally:
        app.extensions["fileproc"].close(app)
    assert 'width="60" height="40" alt="x"' in html


BAD = "{% fileprocessor %}photo.jpg | fill 10x10 gravity=upwards{% empty %}[no picture]{% endfileprocessor %}"


def test_strict_follows_app_debug_when_the_template_renders(make_app):
    app = make_app()  # debug is off while init_app runs, as in a create_app
    assert _render(app, BAD) == "[no picture]"
    app.debug = True  # what app.run(debug=True) and flask run --debug do after create_app
    with pytest.raises(InstructionError, match="gravity"):
        _render(app, BAD)
    app.debug = False
    assert _render(app, BAD) == "[no picture]"


def test_a_projects_tests_catch_a_bad_block(make_app):
    app = make_app(TESTING=True)  # what a project's test fixture passes to create_app
    page = "{% fileprocessor %}photo.jpg | fit 10by{% empty %}[no picture]{% endfileprocessor %}"
    app.get("/")(lambda: render_template_string(page))
    with pytest.raises(InstructionError, match="10by"):
        app.test_client().get("/")


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize("source", [None, "", "missing.jpg"], ids=["None", "empty-string", "missing-file"])
def test_no_picture_renders_the_empty_branch_in_debug_and_not(make_app, debug, source):
    app = make_app()
    app.debug = debug
    html = _render(
        app,
        '{% fileprocessor source=picture alt="x" %}fill 40x40{% empty %}[initials]{% endfileprocessor %}',
        picture=source,
    )
    assert html == "[initials]"


def test_source_names_the_picture_and_a_none_in_the_body_is_no_file_name(make_app, caplog):
    app = make_app()
    html = _render(
        app, "{% fileprocessor source=picture %}fit 30x30{% endfileprocessor %}", picture="photo.jpg"
    )
    assert 'width="30" height="20"' in html
    page = "{% fileprocessor %}{{ picture }} | fit 30x30{% empty %}[none]{% endfileprocessor %}"
    assert _render(app, page, picture=None) == "[none]"
    assert "'None'" not in caplog.text, "a None printed into the body was looked up as a file"


def test_a_url_passed_as_source_is_a_clear_error_with_debug_on(make_app):
    app = make_app()
    app.debug = True
    page = "{% fileprocessor source=url %}fit 30x30{% endfileprocessor %}"
    with pytest.raises(InstructionError, match="absolute path or URL"):
        _render(app, page, url="/static/photo.jpg")


@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        pytest.param({}, "database_url", "sqlite:///{instance}/fileproc/fileproc.db", id="default-store"),
        pytest.param({}, "storage", "file://{instance}/fileproc/results", id="default-results"),
        pytest.param(
            {}, "source_roots", {"default": "{root}/static", "static": "{root}/static"}, id="default-roots"
        ),
        pytest.param(
            {"UPLOAD_FOLDER": "uploads"},
            "source_roots",
            {"default": "{root}/uploads", "static": "{root}/static"},
            id="upload-folder-is-default",
        ),
        pytest.param(
            {"FILEPROC_DATABASE_URL": "sqlite:///site.db"},
            "database_url",
            "sqlite:///{instance}/site.db",
            id="relative-sqlite-in-instance",
        ),
        pytest.param(
            {"FILEPROC_DATABASE_URL": "sqlite:////srv/jobs.db"},
            "database_url",
            "sqlite:////srv/jobs.db",
            id="absolute-sqlite",
        ),
        pytest.param(
            {"FILEPROC_DATABASE_URL": "postgresql://u@db/site"},
            "database_url",
            "postgresql://u@db/site",
            id="postgresql",
        ),
        pytest.param(
            {"FILEPROC_STORAGE": "thumbs"}, "storage", "file://{instance}/thumbs", id="relative-storage"
        ),
        pytest.param(
            {"FILEPROC_STORAGE": "file://thumbs"},
            "storage",
            "file://{instance}/thumbs",
            id="relative-storage-url",
        ),
        pytest.param(
            {"FILEPROC_STORAGE": "file:///srv/thumbs"}, "storage", "file:///srv/thumbs", id="absolute-storage"
        ),
        pytest.param(
            {"FILEPROC_STORAGE": "s3://bucket/thumbs"}, "storage", "s3://bucket/thumbs", id="s3-storage"
        ),
        pytest.param(
            {"FILEPROC_SOURCE_ROOTS": "media=media,shop=/srv/shop"},
            "source_roots",
            {"media": "{root}/media", "shop": "/srv/shop"},
            id="roots-as-text",
        ),
        pytest.param(
            {"FILEPROC_SOURCE_ROOTS": {"media": "media", "store": "django:default"}},
            "source_roots",
            {"media": "{root}/media", "store": "django:default"},
            id="roots-as-dict-storage-kept",
        ),
        pytest.param({"FILEPROC_MAX_SOURCE_BYTES": "2048"}, "max_source_bytes", 2048, id="int-as-text"),
        pytest.param({"FILEPROC_MAX_SOURCE_BYTES": 4096}, "max_source_bytes", 4096, id="int"),
        pytest.param({"FILEPROC_ISOLATE_JOBS": "off"}, "isolate_jobs", False, id="bool-as-text"),
        pytest.param(
            {"FILEPROC_ALLOWED_HOSTS": "a.example,b.example"},
            "allowed_hosts",
            ("a.example", "b.example"),
            id="hosts-as-text",
        ),
    ],
)
def test_settings_come_from_app_config(make_app, tmp_path, config, field, expected):
    app = make_app(init=False, **config)
    root, instance = str(tmp_path / "app"), str(tmp_path / "app" / "instance")
    value = getattr(config_from_app(app), field)

    def placed(text):
        return text.format(root=root, instance=instance) if isinstance(text, str) else text

    if isinstance(expected, dict):
        assert dict(value) == {name: placed(path) for name, path in expected.items()}
    else:
        assert value == placed(expected)


def test_relative_store_and_results_are_written_beside_each_other_in_the_instance_folder(make_app, tmp_path):
    app = make_app(FILEPROC_STORAGE="thumbs", FILEPROC_DATABASE_URL="sqlite:///thumbs.db")
    [(url, *_)] = _IMG.findall(
        _render(app, '{% fileprocessor alt="x" %}photo.jpg | fit 50x50{% endfileprocessor %}')
    )
    assert decode(app.test_client().get(url, follow_redirects=True).data).size == (50, 33)
    instance = tmp_path / "app" / "instance"
    assert sorted(path.name for path in instance.iterdir() if not path.name.startswith("thumbs.db-")) == [
        "thumbs",
        "thumbs.db",
    ]
    assert len(list((instance / "thumbs").rglob("*.jpg"))) == 1
    assert not (tmp_path / "app" / "thumbs").exists(), "nothing written into the package"


@pytest.mark.parametrize(
    ("config", "working_directory", "warned"),
    [
        pytest.param({"UPLOAD_FOLDER": "uploads"}, "elsewhere", True, id="relative-run-elsewhere"),
        pytest.param({"UPLOAD_FOLDER": "uploads"}, "app", False, id="relative-run-from-root"),
        pytest.param({"UPLOAD_FOLDER": "{root}/uploads"}, "elsewhere", False, id="absolute"),
        pytest.param(
            {"UPLOAD_FOLDER": "uploads", "FILEPROC_SOURCE_ROOTS": {"media": "/srv/media"}},
            "elsewhere",
            False,
            id="not-a-root",
        ),
    ],
)
def test_a_relative_upload_folder_read_elsewhere_than_the_app_saves_is_a_warning(
    make_app, tmp_path, monkeypatch, caplog, config, working_directory, warned
):
    root = tmp_path / "app"
    config = {
        key: value.format(root=root) if isinstance(value, str) else value for key, value in config.items()
    }
    app = make_app(init=False, **config)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / working_directory)
    fileproc = FileProcessor(app)
    fileproc.close(app)
    messages = [record.getMessage() for record in caplog.records if record.name == "fileproc_flask"]
    if warned:
        [message] = messages
        assert f"reads pictures from {root / 'uploads'}" in message
        assert str(tmp_path / "elsewhere" / "uploads") in message
    else:
        assert messages == []


def test_settings_do_not_depend_on_the_working_directory(make_app, tmp_path, monkeypatch):
    app = make_app(init=False, FILEPROC_STORAGE="thumbs", FILEPROC_DATABASE_URL="sqlite:///jobs.db")
    configs = []
    for directory in (tmp_path, tmp_path / "app" / "static"):
        monkeypatch.chdir(directory)
        configs.append(config_from_app(app))
    assert configs[0] == configs[1]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {"FILEPROC_STORGE": "x"}, "app.config['FILEPROC_STORGE'] is not a fileproc setting", id="typo"
        ),
        pytest.param(
            {"FILEPROC_MAX_SOURCE_BYTES": "lots"},
            "app.config['FILEPROC_MAX_SOURCE_BYTES']: cannot read 'lots'",
            id="not-a-number",
        ),
        pytest.param(
            {"FILEPROC_PREFIX": "no spaces"}, "app.config['FILEPROC_PREFIX']: prefix:", id="bad-value"
        ),
        pytest.param(
            {"FILEPROC_STORAGE": "ftp://host/thumbs"},
            "app.config['FILEPROC_STORAGE']: storage: expected",
            id="storage-scheme",
        ),
        pytest.param(
            {"FILEPROC_SECRET": "short"}, "app.config['FILEPROC_SECRET']: secret:", id="short-secret"
        ),
    ],
)
def test_a_bad_setting_names_the_config_key(make_app, config, message):
    app = make_app(init=False, **config)
    with pytest.raises(ConfigError) as raised:
        FileProcessor(app)
    assert message in str(raised.value)


def test_flask_fileproc_stats_from_another_directory_sees_the_apps_store(site, tmp_path):
    app = site.make()
    client = app.test_client()
    [(url, *_)] = _IMG.findall(client.get("/").get_data(as_text=True))
    assert client.get(url).status_code == 301
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = _flask(
        "--app",
        f"{tmp_path / 'site' / 'photo_site.py'}:create_app",
        "fileproc",
        "stats",
        "--json",
        cwd=elsewhere,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["states"] == {"done": 1}
    assert not (elsewhere / ".fileproc").exists() and not (elsewhere / "instance").exists()


def test_flask_fileproc_warm_makes_registered_jobs_from_the_apps_source_roots(site, tmp_path, monkeypatch):
    monkeypatch.setenv("FLASK_FILEPROC_BACKGROUND_JOBS", "0")  # left for `fileproc warm` to make
    app = site.make()
    [(url, *_)] = _IMG.findall(app.test_client().get("/").get_data(as_text=True))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = _flask("--app", str(tmp_path / "site" / "photo_site.py"), "fileproc", "warm", cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("1 made, 0 failed")
    checksum = url.rsplit("/", 1)[1].split(".")[0]
    [result] = (tmp_path / "site" / "instance" / "fileproc" / "results").rglob(f"{checksum}.*")
    assert decode(result.read_bytes()).size == (120, 80)


def test_flask_fileproc_help_and_errors_are_fileprocs_own(site, tmp_path):
    app_path = str(tmp_path / "site" / "photo_site.py")
    shown = _flask("--app", app_path, "fileproc", "--help", cwd=tmp_path)
    assert shown.returncode == 0
    assert shown.stdout.startswith("usage: flask fileproc")
    assert all(word in shown.stdout for word in ("stats", "warm", "retry", "gc", "purge", "migrate"))

    listed = _flask("--app", app_path, "--help", cwd=tmp_path)
    assert re.search(r"^\s+fileproc\s+\S", listed.stdout, re.M), listed.stdout

    wrong = _flask("--app", app_path, "fileproc", "retry", "not-a-checksum", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "retry: not a checksum" in wrong.stderr


def test_a_template_host_registering_remotely_is_not_wrapped(make_app):
    app = make_app(init=False, FILEPROC_REGISTRAR_URL="https://img.example.com/_fp", FILEPROC_SECRET="s" * 16)
    before = app.wsgi_app
    FileProcessor(app)
    try:
        assert app.wsgi_app == before
        assert app.extensions["fileproc"].get_middleware(app) is None
    finally:
        app.extensions["fileproc"].close(app)


def test_init_app_twice_wraps_once_and_a_second_extension_is_refused(make_app):
    app = make_app()
    wrapped = app.wsgi_app
    app.extensions["fileproc"].init_app(app)
    assert app.wsgi_app is wrapped
    with pytest.raises(RuntimeError, match="already has a FileProcessor"):
        FileProcessor(app)


def test_get_config_without_init_app_says_what_to_call(make_app):
    app = make_app(init=False)
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        FileProcessor().get_config()
