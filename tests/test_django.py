"""The Django adapter: the ``{% fileprocessor %}`` tag, its settings, ``wrap()`` and the example site.

Django is configured here without a settings module; each test points ``FILEPROCESSOR``
at its own directory with ``override_settings``, which also shows that the adapter
reads its settings again when they change.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import logging
import os
import pathlib
import re
import threading

import django
import pytest
import sqlalchemy
from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-only",
        ALLOWED_HOSTS=["localhost"],
        INSTALLED_APPS=["fileproc_django"],
        MIDDLEWARE=[],
        ROOT_URLCONF=__name__,
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "shared": {"BACKEND": f"{__name__}.RecordingCache", "LOCATION": "fileproc-shared"},
        },
    )
    django.setup()

from django.core import checks  # noqa: E402 - needs configured settings
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.template import Context, Template, TemplateSyntaxError, engines  # noqa: E402
from django.template.base import Origin  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils import translation  # noqa: E402
from django.views.debug import ExceptionReporter  # noqa: E402
from webob import Request  # noqa: E402

import fileproc_django  # noqa: E402
from fileproc_django import conf  # noqa: E402
from fileproc_wsgi import FileProcessor, InstructionError  # noqa: E402
from support import decode, free_port, halves, write  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
SRC = r"/_fp/[0-9a-f]{32}\."


class RecordingCache(LocMemCache):
    """A local-memory cache that remembers the timeout of every ``set``."""

    timeouts: list = []

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        RecordingCache.timeouts.append(timeout)
        super().set(key, value, timeout, version)


# The page the wrap() tests request through Django; its text comes from the test.
PAGE = {"source": ""}


def page(request):
    return HttpResponse(engines["django"].from_string("{% load fileprocessor %}" + PAGE["source"]).render())


urlpatterns = [path("page/", page)]


@pytest.fixture
def media(tmp_path):
    media = tmp_path / "media"
    write(media, "photo.jpg", halves(1000, 600), quality=90)
    write(media, "tom&jerry.png", halves(400, 200))
    return media


@pytest.fixture
def fileprocessor(tmp_path, media):
    """FILEPROCESSOR for this test's directory; the registrar is closed when it ends."""
    values = {
        "database_url": f"sqlite:///{tmp_path / 'fp.db'}",
        "storage": str(tmp_path / "results"),
        "source_roots": {"default": str(media)},
        # Tests replace sources and expect the next render to see it.
        "source_check_interval": 0,
    }
    with override_settings(FILEPROCESSOR=values):
        yield values


def render(source: str, context: dict | None = None, *, name: str = "page.html") -> str:
    """Render ``source`` as the template ``name`` (the tag library already loaded)."""
    template = Template(
        "{% load fileprocessor %}" + source,
        origin=Origin(name, template_name=name),
        engine=engines["django"].engine,
    )
    return template.render(Context(context or {}))


def pattern(expected: str) -> str:
    """``expected`` as a regular expression in which SRC stands for any registered URL."""
    return re.escape(expected).replace("SRC", SRC)


def results(tmp_path) -> list[pathlib.Path]:
    return [item for item in (tmp_path / "results").rglob("*") if item.is_file()]


@pytest.mark.parametrize(
    ("source", "context", "expected"),
    [
        pytest.param(
            "{% fileprocessor %}photo.jpg | fit 300x{% endfileprocessor %}",
            {},
            '<img src="SRCjpg" width="300" height="180" alt="" loading="lazy" decoding="async">',
            id="plain",
        ),
        pytest.param(
            """{% fileprocessor alt='"Tom & Jerry"' class="thumb" %}"""
            "photo.jpg | fit 300x{% endfileprocessor %}",
            {},
            '<img src="SRCjpg" width="300" height="180" alt="&quot;Tom &amp; Jerry&quot;" '
            'loading="lazy" decoding="async" class="thumb">',
            id="literal-attributes-escaped",
        ),
        pytest.param(
            "{% fileprocessor alt=photo.title|upper data-zoom=photo.zoom %}"
            "{{ photo.path }} | fill 200x200{% endfileprocessor %}",
            {"photo": {"title": "Tom & Jerry", "path": "photo.jpg", "zoom": "<2x>"}},
            '<img src="SRCjpg" width="200" height="200" alt="TOM &amp; JERRY" loading="lazy" '
            'decoding="async" data-zoom="&lt;2x&gt;">',
            id="variables-and-filters",
        ),
        pytest.param(
            "{% fileprocessor alt=missing.title %}photo.jpg | fit 100x{% endfileprocessor %}",
            {},
            '<img src="SRCjpg" width="100" height="60" alt="" loading="lazy" decoding="async">',
            id="undefined-variable-is-empty",
        ),
        pytest.param(
            "{% fileprocessor %}\n  # a comment\n  {{ name }}\n  fill 100x50\n  format webp quality=70\n"
            "{% endfileprocessor %}",
            {"name": "tom&jerry.png"},
            '<img src="SRCwebp" width="100" height="50" alt="" loading="lazy" decoding="async">',
            id="body-is-not-html-escaped",
        ),
    ],
)
def test_block_prints_an_img(fileprocessor, tmp_path, source, context, expected):
    html = render(source, context)
    assert re.fullmatch(pattern(expected), html), html
    assert results(tmp_path) == [], "rendering processed an image"


@pytest.mark.parametrize(
    ("language", "thousands"),
    [
        pytest.param("en", True, id="thousand-separator"),
        pytest.param("de", False, id="decimal-comma"),
    ],
)
def test_numbers_in_the_body_are_not_localized(fileprocessor, language, thousands):
    block = (
        "{% fileprocessor %}photo.jpg | upscale | fill {{ w }}x{{ h }} focus={{ x }},{{ y }}"
        "{% endfileprocessor %}"
    )
    with override_settings(USE_THOUSAND_SEPARATOR=thousands), translation.override(language):
        html = render(block, {"w": 1200, "h": 1000, "x": 0.25, "y": 0.5})
    assert 'width="1200" height="1000"' in html


def test_printed_url_is_the_registrars(fileprocessor):
    html = render("{% fileprocessor %}photo.jpg\nfit 300x{% endfileprocessor %}")
    assert f'src="{conf.get_registrar().register("photo.jpg | fit 300x").url}"' in html


class Caption:
    """Like a model instance: equal to its older self while printing something new."""

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, Caption)

    def __hash__(self):
        return 0

    def __str__(self):
        return self.text


def test_a_warm_block_prints_what_it_printed_only_while_nothing_changed(fileprocessor, media, caplog):
    block = (
        "{% for alt in alts %}{% fileprocessor alt=alt %}photo.jpg | fit 300x{% empty %}gone"
        "{% endfileprocessor %}\n{% endfor %}"
    )
    caption = Caption("old")
    first = render(block, {"alts": ["a", "b", caption]}).splitlines()
    assert [re.search(r'width="(\d+)" height="(\d+)" alt="(\w+)"', line).groups() for line in first] == [
        ("300", "180", "a"),
        ("300", "180", "b"),
        ("300", "180", "old"),
    ]
    assert len({re.search(r'src="([^"]+)"', line).group(1) for line in first}) == 1

    caption.text = "new"
    assert render(block, {"alts": [caption]}).splitlines() == [first[2].replace('"old"', '"new"')]

    path = write(media, "photo.jpg", halves(600, 600))
    os.utime(path, ns=(os.stat(path).st_mtime_ns + 10**9,) * 2)
    replaced = render(block, {"alts": ["a"]})
    assert 'width="300" height="300" alt="a"' in replaced
    assert re.search(r'src="([^"]+)"', replaced).group(1) != re.search(r'src="([^"]+)"', first[0]).group(1)

    os.remove(path)
    with caplog.at_level(logging.WARNING, logger="fileproc_wsgi.block"):
        assert render(block, {"alts": ["a"]}) == "gone\n"
    assert "source 'photo.jpg' does not exist" in caplog.text


def test_values_that_compare_equal_print_as_themselves(fileprocessor):
    block = (
        "{% for flag in flags %}{% fileprocessor hidden=flag %}photo.jpg | fit 50x{% endfileprocessor %}\n"
        "{% endfor %}"
    )
    lines = render(block, {"flags": [True, 1, 1.0, "1"]}).splitlines()
    assert [line.partition('decoding="async"')[2] for line in lines] == [
        " hidden>",
        ' hidden="1">',
        ' hidden="1.0">',
        ' hidden="1">',
    ]


def test_as_name_exposes_the_rendition_and_prints_nothing(fileprocessor):
    html = render(
        "[{% fileprocessor as thumb %}photo.jpg | fill 200x100 | format webp{% endfileprocessor %}]"
        "{{ thumb.url }} {{ thumb.width }} {{ thumb.height }} {{ thumb.checksum }} {{ thumb.content_type }}"
        "\n{{ thumb.html }}\n{{ thumb }}"
    )
    first, printed, printed_again = html.split("\n")
    url, width, height, checksum, content_type = first.removeprefix("[]").split()
    assert re.fullmatch(SRC + "webp", url)
    assert (width, height, content_type) == ("200", "100", "image/webp")
    assert url == f"/_fp/{checksum}.webp"
    assert printed == f'<img src="{url}" width="200" height="100" alt="" loading="lazy" decoding="async">'
    assert printed_again == printed, "already escaped: printed as it is under autoescape"


def test_as_name_outlives_an_enclosing_if(fileprocessor):
    html = render(
        "{% if True %}{% fileprocessor as thumb %}photo.jpg | fit 50x{% endfileprocessor %}{% endif %}"
        "{{ thumb.width }}x{{ thumb.height }}"
    )
    assert html == "50x30"


@pytest.mark.parametrize(
    ("arguments", "context", "expected"),
    [
        pytest.param(
            'widths="200,400,2000"',
            {},
            '<img src="SRCjpg" width="800" height="480" alt="" loading="lazy" decoding="async" '
            'srcset="SRCjpg 200w, SRCjpg 400w, SRCjpg 800w" sizes="100vw">',
            id="srcset-offers-the-result-for-widths-above-it",
        ),
        pytest.param(
            "widths=widths sizes=sizes",
            {"widths": [400, 200], "sizes": "(max-width: 600px) 100vw, 400px"},
            '<img src="SRCjpg" width="800" height="480" alt="" loading="lazy" decoding="async" '
            'srcset="SRCjpg 200w, SRCjpg 400w" sizes="(max-width: 600px) 100vw, 400px">',
            id="srcset-from-variables",
        ),
        pytest.param(
            'formats="avif,webp" alt="A & B"',
            {},
            '<picture><source type="image/avif" srcset="SRCavif">'
            '<source type="image/webp" srcset="SRCwebp">'
            '<img src="SRCjpg" width="800" height="480" alt="A &amp; B" loading="lazy" decoding="async">'
            "</picture>",
            id="picture",
        ),
    ],
)
def test_widths_and_formats(fileprocessor, tmp_path, arguments, context, expected):
    html = render(f"{{% fileprocessor {arguments} %}}photo.jpg | fit 800x{{% endfileprocessor %}}", context)
    assert re.fullmatch(pattern(expected), html), html
    assert results(tmp_path) == []


@pytest.mark.parametrize(
    ("debug", "source", "expected", "logged"),
    [
        pytest.param(
            False,
            "{% fileprocessor %}missing.jpg | fit 10x{% empty %}<b>none</b>{% endfileprocessor %}",
            "<b>none</b>",
            "page.html, line 1: source 'missing.jpg' does not exist",
            id="missing-source",
        ),
        pytest.param(
            True,
            "{% fileprocessor %}missing.jpg | fit 10x{% empty %}<b>none</b>{% endfileprocessor %}",
            "<b>none</b>",
            "page.html, line 1: source 'missing.jpg' does not exist",
            id="missing-source-debug",
        ),
        pytest.param(
            False,
            "{% fileprocessor %}missing.jpg{% endfileprocessor %}",
            "",
            "source 'missing.jpg' does not exist",
            id="missing-source-no-empty-branch",
        ),
        pytest.param(
            False,
            "\n{% fileprocessor %}\nphoto.jpg\nfit 10by{% empty %}{{ fallback }}{% endfileprocessor %}",
            "\n&lt;none&gt;",
            "page.html, line 4, column 5, step 'fit'",
            id="bad-text-without-debug",
        ),
        pytest.param(
            False,
            "{% fileprocessor as thumb %}missing.jpg{% empty %}none{% endfileprocessor %}[{{ thumb }}]",
            "none[None]",
            "source 'missing.jpg' does not exist",
            id="as-name-is-none",
        ),
        pytest.param(
            False,
            '{% fileprocessor widths="wide" %}photo.jpg{% empty %}none{% endfileprocessor %}',
            "none",
            "widths= expects whole numbers",
            id="bad-widths-without-debug",
        ),
    ],
)
def test_empty_branch_when_the_block_fails_softly(fileprocessor, caplog, debug, source, expected, logged):
    with override_settings(DEBUG=debug), caplog.at_level(logging.WARNING, logger="fileproc_wsgi.block"):
        assert render(source, {"fallback": "<none>"}) == expected
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert logged in caplog.records[0].getMessage()


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_a_none_printed_into_the_body_is_no_file_name(fileprocessor, caplog, debug):
    # A user with no photo: the variable is None, the body " | fit 10x", the empty branch.
    source = "{% fileprocessor %}{{ user.photo }} | fit 10x{% empty %}no photo{% endfileprocessor %}"
    with override_settings(DEBUG=debug), caplog.at_level(logging.DEBUG, logger="fileproc_wsgi"):
        assert render(source, {"user": {"photo": None}}) == "no photo"
        shown = render(source, {"user": {"photo": "photo.jpg"}})
    assert shown.startswith("<img src=") and 'width="10"' in shown
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert "None" not in caplog.text


def test_bad_text_with_debug_names_the_template_line(fileprocessor):
    source = (
        "<h1>Gallery</h1>\n\n{% fileprocessor alt='x' %}\n  photo.jpg\n  fit 10by\n{% endfileprocessor %}\n"
    )
    with override_settings(DEBUG=True), pytest.raises(InstructionError) as raised:
        render(source, name="gallery.html")
    error = raised.value
    assert str(error).startswith("gallery.html, line 5, column 7, step 'fit': ")
    # Django's debug page shows the instruction line, not the tag's line 3.
    assert (error.template_debug["line"], error.template_debug["during"]) == (5, "  fit 10by")
    report = ExceptionReporter(None, type(error), error, error.__traceback__).get_traceback_text()
    assert "In template gallery.html, error at line 5" in report


@pytest.mark.parametrize(
    ("debug", "engine_debug", "raises"),
    [
        pytest.param(False, True, True, id="tests-turn-the-engines-debug-on"),
        pytest.param(True, False, False, id="the-engines-debug-off"),
        pytest.param(True, None, True, id="DEBUG-unless-set"),
    ],
)
def test_strict_is_the_template_engines_debug(fileprocessor, caplog, debug, engine_debug, raises):
    # Django's test runner sets DEBUG = False: a project's tests turn the engine's debug on.
    options = {} if engine_debug is None else {"debug": engine_debug}
    templates = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "OPTIONS": options}]
    source = "{% fileprocessor %}photo.jpg | fit 10by{% empty %}none{% endfileprocessor %}"
    with override_settings(DEBUG=debug, TEMPLATES=templates):
        if raises:
            with pytest.raises(InstructionError, match="step 'fit'"):
                render(source)
        else:
            assert render(source) == "none"
            assert "step 'fit'" in caplog.text


SYNTAX = "expected {% fileprocessor [as NAME] [key=value ...] %} instructions"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            "{% fileprocessor as %}x{% endfileprocessor %}",
            "'as' needs a variable name after it, got 'as'",
            id="as-alone",
        ),
        pytest.param(
            "{% fileprocessor as 9lives %}x{% endfileprocessor %}",
            "'as' needs a variable name after it, got 'as 9lives'",
            id="as-bad-name",
        ),
        pytest.param(
            "{% fileprocessor thumb %}x{% endfileprocessor %}",
            "expected key=value, got 'thumb'",
            id="bare-word",
        ),
        pytest.param(
            "{% fileprocessor alt= %}x{% endfileprocessor %}", "expected key=value, got 'alt='", id="no-value"
        ),
        pytest.param(
            "{% fileprocessor alt='x' as thumb %}x{% endfileprocessor %}",
            "'as NAME' must come first, before any key=value",
            id="as-not-first",
        ),
        pytest.param(
            "{% fileprocessor alt=a alt=b %}x{% endfileprocessor %}", "alt= is given twice", id="duplicate"
        ),
        pytest.param(
            "\n{% fileprocessor %}photo.jpg | fit 10x",
            "no {% endfileprocessor %} closes the block opened on line 2",
            id="unclosed",
        ),
        pytest.param(
            "{% fileprocessor %}photo.jpg{% empty %}none",
            "no {% endfileprocessor %} closes the block opened on line 1",
            id="unclosed-after-empty",
        ),
    ],
)
def test_malformed_tags_fail_when_the_template_compiles(source, message):
    with pytest.raises(TemplateSyntaxError) as raised:
        Template("{% load fileprocessor %}" + source, engine=engines["django"].engine)
    assert str(raised.value).startswith(f"fileprocessor tag: {message}; {SYNTAX}")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            "{% fileprocessor alt=x|nosuchfilter %}x{% endfileprocessor %}",
            "Invalid filter: 'nosuchfilter'",
            id="unknown-filter",
        ),
        pytest.param(
            "{% fileprocessor %}{% if x %}photo.jpg{% endfileprocessor %}",
            "Invalid block tag on line 1: 'endfileprocessor', expected 'elif', 'else' or 'endif'",
            id="unclosed-tag-inside",
        ),
    ],
)
def test_errors_inside_the_tag_keep_djangos_message(source, message):
    with pytest.raises(TemplateSyntaxError) as raised:
        Template("{% load fileprocessor %}" + source, engine=engines["django"].engine)
    assert str(raised.value).startswith(message)


def test_override_settings_switches_configuration(fileprocessor, tmp_path, media):
    block = "{% fileprocessor %}photo.jpg | fit 100x{% endfileprocessor %}"
    assert re.match(r'<img src="/_fp/', render(block))
    other = tmp_path / "other"
    write(other, "photo.jpg", halves(400, 400))
    with override_settings(
        FILEPROCESSOR={**fileprocessor, "prefix": "/thumbs", "source_roots": {"default": str(other)}}
    ):
        assert re.match(r'<img src="/thumbs/[0-9a-f]{32}\.jpg" width="100" height="100"', render(block))
        assert conf.get_config().prefix == "/thumbs"
    assert re.match(r'<img src="/_fp/[0-9a-f]{32}\.jpg" width="100" height="60"', render(block))


@pytest.mark.parametrize(
    ("overrides", "check_id", "message"),
    [
        pytest.param(
            {"FILEPROCESSOR": {"sauce_roots": {}}},
            "fileproc_django.E001",
            "FILEPROCESSOR: unknown setting 'sauce_roots'",
            id="unknown-key",
        ),
        pytest.param(
            {"FILEPROCESSOR": {"prefix": "/"}},
            "fileproc_django.E001",
            "FILEPROCESSOR: prefix: expected a URL path",
            id="bad-value",
        ),
        pytest.param(
            {"FILEPROCESSOR": ["database_url"]},
            "fileproc_django.E001",
            "FILEPROCESSOR: expected a dict of fileproc_wsgi.Config fields, got list",
            id="not-a-dict",
        ),
        pytest.param(
            {"FILEPROCESSOR_CACHE": "nowhere"},
            "fileproc_django.E002",
            "FILEPROCESSOR_CACHE: expected one of the aliases in CACHES (default, shared), got 'nowhere'",
            id="unknown-cache",
        ),
    ],
)
def test_bad_settings_are_reported_by_the_check_and_at_first_use(fileprocessor, overrides, check_id, message):
    with override_settings(**overrides):
        found = [error for error in checks.run_checks() if error.id.startswith("fileproc_django.")]
        assert [(error.id, error.msg.startswith(message)) for error in found] == [(check_id, True)]
        with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
            render("{% fileprocessor %}photo.jpg{% endfileprocessor %}")


def test_threads_share_one_registrar(fileprocessor):
    conf.reset()
    start = threading.Barrier(8)

    def first_use():
        start.wait()
        return conf.get_registrar()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        registrars = list(pool.map(lambda _: first_use(), range(8)))
    assert len({id(registrar) for registrar in registrars}) == 1


def test_shared_cache_answers_a_new_registrar_without_the_database(fileprocessor):
    block = "{% fileprocessor %}photo.jpg | fit 300x{% endfileprocessor %}"
    first = render(block)  # registered before the cache is configured
    with override_settings(FILEPROCESSOR_CACHE="shared"):
        RecordingCache.timeouts.clear()
        assert render(block) == first
        assert RecordingCache.timeouts == [None], "entries must never expire"
        conf.reset()  # as on another app server: an empty in-process LRU
        statements = []
        engine = conf.get_registrar().store.engine
        sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        assert render(block) == first
        # No row written: the store is only read for its generation (once per
        # source_check_interval), which is how a purge elsewhere invalidates the entry.
        assert [s for s in statements if "fileproc_generation" in s]
        assert not [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def test_a_page_through_wrap_registers_in_one_commit_and_its_images_load(fileprocessor, tmp_path):
    PAGE["source"] = (
        "{% fileprocessor %}photo.jpg | fit 300x{% endfileprocessor %}\n"
        "{% fileprocessor formats='webp' %}photo.jpg | fill 120x120{% endfileprocessor %}\n"
        "{% fileprocessor widths='100,200' %}tom&jerry.png | fit 400x{% endfileprocessor %}\n"
    )
    # No background jobs: this test counts the commits and rows of the page's registration.
    with override_settings(FILEPROCESSOR={**fileprocessor, "background_jobs": 0}):
        app = fileproc_django.wrap(WSGIHandler())
        assert isinstance(app, FileProcessor) and app.registrar is conf.get_registrar()
        store = conf.get_registrar().store
        store.create_tables()
        commits = []
        sqlalchemy.event.listen(store.engine, "commit", lambda connection: commits.append(1))

        response = Request.blank("/page/").get_response(app)
        assert response.status_int == 200
        assert len(commits) == 1
        assert store.count_by_state() == {"pending": 6}
        assert results(tmp_path) == []

        images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', response.text)
        assert [(int(w), int(h)) for _, w, h in images] == [(300, 180), (120, 120), (400, 200)]
        for url, width, height in images:
            redirect = Request.blank(url).get_response(app)
            assert redirect.status_int == 301
            assert decode(Request.blank(redirect.location).get_response(app).body).size == (
                int(width),
                int(height),
            )


def test_wrap_leaves_the_app_alone_when_another_server_processes(fileprocessor):
    application = WSGIHandler()
    remote = {**fileprocessor, "registrar_url": "https://img.example.com/_fp", "secret": "s" * 32}
    with override_settings(FILEPROCESSOR=remote):
        assert fileproc_django.wrap(application) is application


def test_an_unreachable_processing_server_renders_the_empty_branch(fileprocessor, caplog):
    remote = {**fileprocessor, "registrar_url": f"http://127.0.0.1:{free_port()}/_fp", "secret": "s" * 32}
    with override_settings(FILEPROCESSOR=remote, DEBUG=True):
        html = render("{% fileprocessor %}photo.jpg | fit 10x{% empty %}later{% endfileprocessor %}")
    assert html == "later"
    assert "is unreachable" in caplog.text


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manage_py_fileproc_runs_the_command_line_on_the_settings(fileprocessor, capsys):
    from django.core.management import call_command

    render("{% fileprocessor %}photo.jpg | fit 40x{% endfileprocessor %}")
    call_command("fileproc", "stats")
    printed = capsys.readouterr().out
    assert "jobs: 1 pending" in printed, printed
    call_command("fileproc", "migrate")
    assert "fileproc_jobs: already at revision" in capsys.readouterr().out


def test_manage_py_fileproc_passes_options_through(fileprocessor, capsys):
    import json

    from fileproc_django.management.commands.fileproc import Command

    render("{% fileprocessor %}photo.jpg | fit 40x{% endfileprocessor %}")
    Command().run_from_argv(["manage.py", "fileproc", "stats", "--json"])
    assert json.loads(capsys.readouterr().out)["states"] == {"pending": 1}
    with pytest.raises(SystemExit):
        Command().run_from_argv(["manage.py", "fileproc", "retry"])  # neither checksums nor --all-failed
