"""Per-tag render cost: ``{% fileprocessor %}`` against ``{{ var }}``, sorl-thumbnail and easy-thumbnails.

What it measures
    A temporary directory holds ``--tags`` small JPEGs (800x600, ``photo0.jpg`` ...), which
    are both the fileproc source root and Django's MEDIA_ROOT, a SQLite database for
    fileproc (the embedded default, in the temporary directory) and one for Django.
    Every page is ``{% for path in paths %}...{% endfor %}`` over the ``--tags`` file
    names (strings, as a model's file name would be), rendered in-process with
    ``Template.render(Context)`` (Django) or ``Template.render(context)`` (Jinja2,
    autoescape on); templates are compiled before timing. Per item:

    Django {{ var }}       ``<img src="{{ url }}">`` (the Django baseline)
    Django fileproc warm   ``{% fileprocessor alt=title %}{{ path }} | fit 400x300
                           {% endfileprocessor %}``, every text registered by an earlier
                           render (so a tag costs its body, its argument, a ``stat`` of
                           the source and printing the ``<img>``)
    sorl-thumbnail warm    ``{% thumbnail path "400x300" as im %}<img src="{{ im.url }}"
                           width=.. height=..>{% endthumbnail %}``, thumbnails generated
                           by an earlier render
    easy-thumbnails warm   ``<img src="{% thumbnail path 400x300 %}">``, the same; its
                           ``as im`` form would open each thumbnail file to read
                           ``im.width`` on local storage, so the URL-only form is timed
    Jinja2 {{ var }}       the Jinja2 baseline, as the Django one
    Jinja2 fileproc warm   the same block through ``fileproc_jinja2.FileProcessorExtension``
    cold (Django, Jinja2)  the block with texts never seen before (a fresh ``fit WxH``
                           each render), the render inside ``registrar.batch()`` as the
                           middleware runs a request, so the time includes parsing,
                           reading each source's header and the one commit
    loop only              (information) the loop printing a constant ``<img>``: the part
                           of every figure that is the ``{% for %}`` itself

    The body prints a string: with ``photo{{ i }}.jpg`` over integers, Django's number
    localisation alone adds about 4 us per tag, which is Django's cost, not the tag's.

    Warm cases: a few untimed renders, then rounds (every case once per round, so
    background load hits all alike) of a batch of renders sized to take about
    ``--batch-ms``; up to ``--rounds`` rounds or until ``--budget`` seconds pass; the
    garbage collector is off while a batch runs, as in ``timeit``. Cold cases: one
    render per case per round. Each figure is the median (and best) over the rounds of
    the time per tag, in microseconds.

    sorl-thumbnail uses its default key-value store,
    ``sorl.thumbnail.kvstores.cached_db_kvstore.KVStore``, over a local-memory cache: that
    is what a default install runs (the database only behind the cache), so a warm tag
    costs a cache lookup and no query. The cache holds 100,000 entries so that sorl's
    keys are never culled (Django's default of 300 would send some lookups to the database).

Targets
    Django fileproc warm <= 2x Django {{ var }}
    Jinja2 fileproc warm <= 4x Jinja2 {{ var }}
    cold <= 1 ms per new tag (Django and Jinja2)

Usage: ``python bench/templates.py [--tags N] [--rounds R] [--batch-ms MS] [--budget S] [--quick]``
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not
sys.path.insert(1, str(ROOT / "integrations"))

from fileproc_wsgi.config import Config  # noqa: E402
from fileproc_wsgi.registrar import Registrar  # noqa: E402

SOURCE_SIZE = (800, 600)
DJANGO_TARGET = 2.0  # Django fileproc warm / Django {{ var }}
JINJA2_TARGET = 4.0  # Jinja2 fileproc warm / Jinja2 {{ var }}
COLD_TARGET_US = 1000.0  # per new tag
TITLE = "A photo & its caption"
URL = "/media/photo0.jpg"

LOOP = "{% for path in paths %}BODY{% endfor %}"
BLOCK = "{% fileprocessor alt=title %}{{ path }} | fit 400x300{% endfileprocessor %}"
COLD_BLOCK = "{% fileprocessor alt=title %}{{ path }} | fit {{ w }}x{{ h }}{% endfileprocessor %}"
PAGES = {
    "loop only": "<img>",
    "var": '<img src="{{ url }}">',
    "fileproc": BLOCK,
    "cold": COLD_BLOCK,
}
SORL_PAGE = "{% load sorl_thumbnail %}" + LOOP.replace(
    "BODY",
    '{% thumbnail path "400x300" as im %}'
    '<img src="{{ im.url }}" width="{{ im.width }}" height="{{ im.height }}">{% endthumbnail %}',
)
EASY_PAGE = "{% load easy_thumbnails %}" + LOOP.replace("BODY", '<img src="{% thumbnail path 400x300 %}">')

Render = Callable[[], str]


@dataclass
class Case:
    """One row of the table: a page to render, and what its time is compared with."""

    name: str
    render: Render
    baseline: str | None = None
    cold: bool = False
    renders: int = 1
    per_tag_us: list[float] | None = None
    sample: str = ""

    def figure(self) -> tuple[float, float]:
        return statistics.median(self.per_tag_us), min(self.per_tag_us)


# -- fixture -----------------------------------------------------------------------------------


def make_sources(directory: Path, count: int) -> None:
    """``count`` distinct 800x600 JPEGs, a gradient tinted differently in each."""
    gradient = Image.radial_gradient("L").resize(SOURCE_SIZE)
    for index in range(count):
        tint = Image.new("L", SOURCE_SIZE, (index * 37) % 256)
        Image.merge("RGB", (gradient, tint, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT))).save(
            directory / f"photo{index}.jpg", quality=85
        )


def page_context(tags: int) -> dict:
    """What every page's loop runs over: the source paths, ``photo0.jpg`` ..., as strings,
    the way a model's file name reaches a template."""
    return {"paths": [f"photo{i}.jpg" for i in range(tags)], "url": URL, "title": TITLE}


def fresh_sizes() -> Callable[[], tuple[int, int]]:
    """A ``(w, h)`` never returned before, each below the sources' size, so every cold
    render registers texts no registrar has seen."""
    counter = itertools.count()

    def next_size() -> tuple[int, int]:
        k = next(counter)
        return 100 + k % 300, 100 + k // 300

    return next_size


# -- Django ------------------------------------------------------------------------------------


def setup_django(directory: Path, media: Path, config: Config, with_adapter: bool) -> None:
    import django
    from django.conf import settings
    from django.core.management import call_command

    apps = ["sorl.thumbnail", "easy_thumbnails"]
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-templates",
        USE_TZ=True,
        INSTALLED_APPS=(["fileproc_django"] if with_adapter else []) + apps,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(directory / "django.db")}},
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": 100_000},
            }
        },
        MEDIA_ROOT=str(media),
        MEDIA_URL="/media/",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "OPTIONS": {
                    # Both libraries call themselves "thumbnail"; distinct names load each one.
                    "libraries": {
                        "sorl_thumbnail": "sorl.thumbnail.templatetags.thumbnail",
                        "easy_thumbnails": "easy_thumbnails.templatetags.thumbnail",
                    }
                },
            }
        ],
        FILEPROCESSOR={
            "database_url": config.database_url,
            "storage": config.storage,
            "source_roots": dict(config.source_roots),
        },
        THUMBNAIL_KVSTORE="sorl.thumbnail.kvstores.cached_db_kvstore.KVStore",
    )
    django.setup()
    call_command("migrate", verbosity=0, run_syncdb=True)


def django_renderer(source: str, context: dict) -> Render:
    from django.template import Context, Template

    template = Template(source)
    bound = Context(context)
    return lambda: template.render(bound)


def django_cases(
    tags: int, cold_size: Callable[[], tuple[int, int]], adapter_problem: str | None
) -> list[Case]:
    from django.template import Context, Template

    context = page_context(tags)
    cases = [
        Case(
            "Django loop only",
            django_renderer(LOOP.replace("BODY", PAGES["loop only"]), context),
            "Django {{ var }}",
        ),
        Case("Django {{ var }}", django_renderer(LOOP.replace("BODY", PAGES["var"]), context)),
    ]
    if adapter_problem is None:
        from fileproc_django import get_registrar

        header = "{% load fileprocessor %}"
        cases.append(
            Case(
                "Django fileproc warm",
                django_renderer(header + LOOP.replace("BODY", PAGES["fileproc"]), context),
                "Django {{ var }}",
            )
        )
        cold = Template(header + LOOP.replace("BODY", PAGES["cold"]))
        registrar = get_registrar()

        def render_cold() -> str:
            w, h = cold_size()
            with registrar.batch():
                return cold.render(Context({**context, "w": w, "h": h}))

        cases.append(Case("Django fileproc cold", render_cold, "Django {{ var }}", cold=True))
    cases.append(Case("sorl-thumbnail warm", django_renderer(SORL_PAGE, context), "Django {{ var }}"))
    cases.append(Case("easy-thumbnails warm", django_renderer(EASY_PAGE, context), "Django {{ var }}"))
    return cases


def find_django_adapter_problem() -> str | None:
    """None when ``{% load fileprocessor %}`` can work, else why not."""
    try:
        if importlib.util.find_spec("fileproc_django") is None:
            return "fileproc_django is not importable"
        if importlib.util.find_spec("fileproc_django.templatetags.fileprocessor") is None:
            return "fileproc_django has no templatetags/fileprocessor.py yet"
    except ImportError as error:
        return f"fileproc_django: {error}"
    return None


# -- Jinja2 ------------------------------------------------------------------------------------


def jinja2_cases(
    tags: int, config: Config, cold_size: Callable[[], tuple[int, int]]
) -> tuple[list[Case], Registrar | None]:
    from jinja2 import Environment

    context = page_context(tags)
    plain = Environment(autoescape=True)
    cases = [
        Case(
            "Jinja2 loop only",
            _jinja2_renderer(plain, LOOP.replace("BODY", PAGES["loop only"]), context),
            "Jinja2 {{ var }}",
        ),
        Case("Jinja2 {{ var }}", _jinja2_renderer(plain, LOOP.replace("BODY", PAGES["var"]), context)),
    ]
    try:
        from fileproc_jinja2 import FileProcessorExtension
    except ImportError as error:
        print(f"note: Jinja2 fileproc cases skipped: {error}")
        return cases, None
    environment = Environment(autoescape=True, extensions=[FileProcessorExtension])
    registrar = Registrar(config)
    environment.fileprocessor_registrar = registrar
    cases.append(
        Case(
            "Jinja2 fileproc warm",
            _jinja2_renderer(environment, LOOP.replace("BODY", PAGES["fileproc"]), context),
            "Jinja2 {{ var }}",
        )
    )
    cold = environment.from_string(LOOP.replace("BODY", PAGES["cold"]))

    def render_cold() -> str:
        w, h = cold_size()
        with registrar.batch():
            return cold.render(**context, w=w, h=h)

    cases.append(Case("Jinja2 fileproc cold", render_cold, "Jinja2 {{ var }}", cold=True))
    return cases, registrar


def _jinja2_renderer(environment, source: str, context: dict) -> Render:
    template = environment.from_string(source)
    return lambda: template.render(context)


# -- measuring ---------------------------------------------------------------------------------


def prepare(case: Case, batch_ms: float) -> None:
    """Warm the case up (registering, generating thumbnails) and size its batch."""
    case.sample = case.render()
    if case.cold:
        return
    for _ in range(3):
        case.render()
    start = time.perf_counter_ns()
    again = case.render()
    once_ms = (time.perf_counter_ns() - start) / 1e6
    if again != case.sample:
        sys.exit(f"{case.name}: a warm render printed something else than the first one")
    case.renders = max(1, min(2000, round(batch_ms / max(once_ms, 1e-3))))


def time_batch(case: Case, tags: int) -> float:
    """Microseconds per tag of one batch of ``case.renders`` renders, the collector off."""
    render = case.render
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(case.renders):
            render()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / case.renders / tags / 1000


def time_cases(cases: list[Case], tags: int, rounds: int, budget: float) -> int:
    """Up to ``rounds`` rounds of one batch per case, or until ``budget`` seconds pass."""
    for case in cases:
        case.per_tag_us = []
    deadline = time.perf_counter() + budget
    done = 0
    for _ in range(rounds):
        for case in cases:
            case.per_tag_us.append(time_batch(case, tags))
        done += 1
        if time.perf_counter() > deadline:
            break
    return done


# -- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def first_tag(html: str) -> str:
    html = html.strip()
    end = html.find(">", html.find("<img")) + 1
    if html.startswith("<picture"):
        end = html.find("</picture>") + len("</picture>")
    return html[:end] if end > 0 else html[:120]


def print_table(cases: list[Case]) -> None:
    by_name = {case.name: case for case in cases}
    header = f"{'case':<22} {'median us/tag':>13} {'best':>7} {'renders':>7} {'ratio':>7}  vs"
    print(header)
    print("-" * (len(header) + 20))
    for case in cases:
        median, best = case.figure()
        if case.baseline:
            ratio = f"{median / by_name[case.baseline].figure()[0]:.2f}x"
            against = case.baseline
        else:
            ratio, against = "1.00x", "(baseline)"
        renders = "1 new" if case.cold else str(case.renders)
        print(f"{case.name:<22} {median:>13.3f} {best:>7.3f} {renders:>7} {ratio:>7}  {against}")
    print("(microseconds per tag: median and best over the rounds; renders = renders per timed batch)")


def print_checks(cases: list[Case]) -> None:
    by_name = {case.name: case for case in cases}
    print()

    def ratio_check(name: str, baseline: str, target: float) -> None:
        if name not in by_name:
            print(f"{name} / {baseline}: not measured (adapter missing)   target <= {target:.0f}x   n/a")
            return
        ratio = by_name[name].figure()[0] / by_name[baseline].figure()[0]
        best = by_name[name].figure()[1] / by_name[baseline].figure()[1]
        print(
            f"{name} / {baseline} (median): {ratio:.2f}x   target <= {target:.0f}x   "
            f"{verdict(ratio <= target)}   (best / best: {best:.2f}x)"
        )

    ratio_check("Django fileproc warm", "Django {{ var }}", DJANGO_TARGET)
    ratio_check("Jinja2 fileproc warm", "Jinja2 {{ var }}", JINJA2_TARGET)
    for name in ("Django fileproc cold", "Jinja2 fileproc cold"):
        if name not in by_name:
            print(f"{name}: not measured (adapter missing)   target <= {COLD_TARGET_US:.0f} us   n/a")
            continue
        median, best = by_name[name].figure()
        print(
            f"{name}, per new tag (median): {median:.1f} us   target <= {COLD_TARGET_US:.0f} us   "
            f"{verdict(median <= COLD_TARGET_US)}   (best {best:.1f} us)"
        )
    for name in ("sorl-thumbnail warm", "easy-thumbnails warm"):
        if name in by_name and "Django fileproc warm" in by_name:
            ratio = by_name["Django fileproc warm"].figure()[0] / by_name[name].figure()[0]
            print(f"Django fileproc warm / {name} (median): {ratio:.2f}x   (information)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=100, help="tags per page (default 100)")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument(
        "--batch-ms", type=float, default=40.0, help="aimed length of one warm batch, in ms (default 40)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=35.0,
        help="seconds of timed rounds before stopping early (default 35)",
    )
    parser.add_argument("--quick", action="store_true", help="a short run: 5 rounds of 10 ms batches")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batch_ms, args.budget = min(args.rounds, 5), min(args.batch_ms, 10.0), 8.0

    started = time.perf_counter()
    print(
        f"python {sys.version.split()[0]}; Django {package_version('Django')}, "
        f"Jinja2 {package_version('Jinja2')}, sorl-thumbnail {package_version('sorl-thumbnail')}, "
        f"easy-thumbnails {package_version('easy-thumbnails')}, Pillow {package_version('Pillow')}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    with tempfile.TemporaryDirectory(prefix="fp-bench-templates-") as name:
        directory = Path(name)
        media = directory / "media"
        media.mkdir()
        make_sources(media, args.tags)
        config = Config(
            source_roots={"default": str(media)},
            database_url=f"sqlite:///{directory / 'fp.db'}",
            storage=str(directory / "results"),
        )
        problem = find_django_adapter_problem()
        if problem:
            print(f"note: Django fileproc cases skipped: {problem}")
        setup_django(directory, media, config, with_adapter=problem is None)
        cold_size = fresh_sizes()
        cases = django_cases(args.tags, cold_size, problem)
        jinja2, registrar = jinja2_cases(args.tags, config, cold_size)
        cases += jinja2
        for case in cases:
            prepare(case, args.batch_ms)
        print(
            f"page: {args.tags} tags in a for loop over {args.tags} distinct {SOURCE_SIZE[0]}x"
            f"{SOURCE_SIZE[1]} JPEGs; fit 400x300 -> 400x300; setup (sources, migrate, first renders) "
            f"{time.perf_counter() - started:.1f} s"
        )
        print("first tag of each page:")
        for case in cases:
            print(f"  {case.name:<22} {first_tag(case.sample)}")
        print()
        rounds = time_cases(cases, args.tags, args.rounds, args.budget)
        print(f"{rounds} rounds (gc off while a batch runs)")
        print_table(cases)
        print_checks(cases)

        from django.db import connections

        connections.close_all()
        if registrar is not None:
            registrar.store.engine.dispose()
        if problem is None:
            from fileproc_django import get_registrar

            get_registrar().store.engine.dispose()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
