"""The ``fileproc-example`` directive: an instruction text and the picture it makes.

The pictures are made by the documentation build itself, through the real thing: a
:class:`~fileproc_wsgi.Registrar` and a :class:`~fileproc_wsgi.FileProcessor` on a
temporary SQLite site register the text, answer the first request for its ``/_fp/`` URL
with a redirect, and serve the stored file it leads to. The sources are drawn here with
Pillow (a photo and a transparent logo) or made by :mod:`fileproc_wsgi.samples` (a PDF
and a short video), so no file comes from outside.

A picture whose size differs from the one the registrar promised is a warning (so an
error under ``-W``), and so is a built-in step word that no example on the site uses.
The files go to ``_images/fileproc/`` of the output, with ``manifest.json`` listing each
one's text and promised size for the tests.

    ```{fileproc-example} fill 200x150 gravity=east
    ```

    ```{fileproc-example} page 2 | fit 200x
    :source: document.pdf
    ```
"""

from __future__ import annotations

import io
import json
import logging as stdlib_logging
import os
import shutil
import tempfile
import threading

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

PICTURES = "fileproc"  # under the builder's _images directory
SOURCES = ("photo.jpg", "logo.png", "document.pdf", "clip.mp4")


def draw_photo(path: str) -> None:
    """A landscape with its subject off-centre, so that gravity and crops show."""
    from PIL import Image, ImageDraw

    width, height = 640, 427
    picture = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(picture)
    for y in range(height):  # a sky lighter towards the horizon
        t = y / height
        draw.line((0, y, width, y), fill=(int(70 + 120 * t), int(130 + 90 * t), int(210 + 30 * t)))
    draw.ellipse((500, 40, 580, 120), fill="#fde047")
    draw.polygon([(0, 300), (180, 190), (360, 300)], fill="#3f7f4f")
    draw.polygon([(220, 310), (430, 170), (640, 310)], fill="#2f6f3e")
    draw.rectangle((0, 300, width, height), fill="#4d8b55")
    draw.rectangle((90, 250, 190, 330), fill="#f8fafc")  # a house, left of centre
    draw.polygon([(80, 252), (140, 205), (200, 252)], fill="#b91c1c")
    draw.rectangle((125, 290, 150, 330), fill="#7c2d12")
    draw.rectangle((510, 240, 524, 330), fill="#78350f")  # a tree on the right
    draw.ellipse((470, 170, 565, 265), fill="#166534")
    picture.save(path, quality=92)


def draw_logo(path: str) -> None:
    """A badge on a transparent ground, for pad, background and PNG results."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGBA", (320, 240), (0, 0, 0, 0))
    draw = ImageDraw.Draw(picture)
    draw.rounded_rectangle((20, 20, 300, 220), radius=48, fill=(37, 99, 235, 255))
    draw.ellipse((100, 60, 220, 180), fill=(250, 204, 21, 255))
    draw.rectangle((150, 20, 170, 220), fill=(255, 255, 255, 160))
    picture.save(path)


class Site:
    """A throwaway fileproc site: sources, a SQLite store and local results in a temporary directory."""

    def __init__(self) -> None:
        from fileproc_wsgi import Config, FileProcessor, Registrar, samples

        # One INFO line per job (fileproc_wsgi.jobs) would be the build's noise.
        stdlib_logging.getLogger("fileproc_wsgi").setLevel(stdlib_logging.WARNING)
        self.directory = tempfile.mkdtemp(prefix="fileproc-docs-")
        media = os.path.join(self.directory, "media")
        os.mkdir(media)
        draw_photo(os.path.join(media, "photo.jpg"))
        draw_logo(os.path.join(media, "logo.png"))
        samples.write_document(os.path.join(media, "document.pdf"))
        samples.write_clip(os.path.join(media, "clip.mp4"), width=320, height=180, seconds=2.0, fps=12)
        config = Config(
            database_url=f"sqlite:///{os.path.join(self.directory, 'fileproc.db')}",
            storage=os.path.join(self.directory, "results"),
            source_roots={"default": media},
            isolate_jobs=False,  # one job at a time, no worker processes to start or stop
            background_jobs=0,
            final_urls=False,
        )
        self.registrar = Registrar(config)
        self.middleware = FileProcessor(None, config, registrar=self.registrar)

    def make(self, text: str):
        """``(representation, bytes of the result)`` of ``text``, through a first request."""
        from webob import Request

        representation = self.registrar.register(text)
        first = Request.blank(representation.url).get_response(self.middleware)
        if first.status_int not in (301, 302) or not first.location:
            raise RuntimeError(f"{text!r}: the first request answered {first.status}: {first.text[:200]}")
        location = first.location.removeprefix("http://localhost")
        stored = Request.blank(location).get_response(self.middleware)
        if stored.status_int != 200:
            raise RuntimeError(f"{text!r}: {location} answered {stored.status}")
        return representation, stored.body

    def close(self) -> None:
        self.middleware.close()
        self.registrar.close()
        shutil.rmtree(self.directory, ignore_errors=True)


_lock = threading.Lock()


def site(app: Sphinx) -> Site:
    with _lock:
        if getattr(app, "_fileproc_site", None) is None:
            app._fileproc_site = Site()
        return app._fileproc_site


class picture(nodes.General, nodes.Element):
    """A made result: ``file`` under _images/fileproc/, ``width``, ``height``, ``alt``, ``caption``."""


def visit_picture_html(translator, node: picture) -> None:
    src = f"{translator.builder.imgpath}/{PICTURES}/{node['file']}"
    translator.body.append(
        '<figure class="fileproc-example">'
        f'<img src="{translator.encode(src)}" width="{node["width"]}" height="{node["height"]}" '
        f'alt="{translator.encode(node["alt"])}" loading="lazy">'
        f"<figcaption>{translator.encode(node['caption'])}</figcaption></figure>\n"
    )
    raise nodes.SkipNode


def skip_picture(translator, node: picture) -> None:
    raise nodes.SkipNode


class Example(SphinxDirective):
    """The text ``<source> | <argument>`` as a code block, then the picture it makes."""

    optional_arguments = 1
    final_argument_whitespace = True
    option_spec = {"source": lambda value: directives.choice(value, SOURCES)}

    def run(self) -> list[nodes.Node]:
        source = self.options.get("source", SOURCES[0])
        steps = (self.arguments[0] if self.arguments else "").strip()
        text = f"{source} | {steps}" if steps else source
        try:
            representation, data = site(self.env.app).make(text)
        except Exception as error:  # noqa: BLE001 - any failure is the page's warning
            logger.warning("fileproc-example %r: %s", text, error, location=self.get_location())
            return [nodes.literal_block(text, text)]
        from PIL import Image

        with Image.open(io.BytesIO(data)) as made:
            made_size, made_format = made.size, made.format
        promised = (representation.width, representation.height)
        if made_size != promised:
            logger.warning(
                "fileproc-example %r: promised %sx%s, made %sx%s",
                text,
                *promised,
                *made_size,
                location=self.get_location(),
            )
        name = representation.url.rsplit("/", 1)[-1]
        directory = os.path.join(self.env.app.outdir, "_images", PICTURES)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, name), "wb") as file:
            file.write(data)
        record = {
            "text": text,
            "file": name,
            "width": promised[0],
            "height": promised[1],
            "format": made_format,
        }
        self.env.fileproc_pictures.setdefault(self.env.docname, []).append(record)
        block = nodes.literal_block(text, text, language="text")
        caption = f"{made_size[0]} × {made_size[1]} {made_format}, {len(data):,} bytes"
        return [
            nodes.container(
                "",
                block,
                picture(file=name, width=promised[0], height=promised[1], alt=text, caption=caption),
                classes=["fileproc-example-pair"],
            )
        ]


def words_of(text: str) -> set[str]:
    """The step words of an example's text: ``source`` for its first step, then each step's first word."""
    steps = [step.split() for line in text.splitlines() for step in line.split("|")]
    steps = [step for step in steps if step]
    return {"source"} | {step[0].lower() for step in steps[1:]}


def init_env(app: Sphinx, env, docnames) -> None:
    if not hasattr(env, "fileproc_pictures"):
        env.fileproc_pictures = {}


def purge(app: Sphinx, env, docname: str) -> None:
    getattr(env, "fileproc_pictures", {}).pop(docname, None)


def merge(app: Sphinx, env, docnames, other) -> None:
    env.fileproc_pictures.update(getattr(other, "fileproc_pictures", {}))


def check_every_step_shown(app: Sphinx, env) -> None:
    from fileproc_wsgi.instructions import BUILTIN_WORDS

    used = set()
    for records in env.fileproc_pictures.values():
        for record in records:
            used |= words_of(record["text"])
    for word in sorted(BUILTIN_WORDS - used):
        logger.warning("the step %r has no fileproc-example on any page", word)


def finish(app: Sphinx, exception) -> None:
    made = getattr(app, "_fileproc_site", None)
    if made is not None:
        made.close()
        app._fileproc_site = None
    if exception is None and app.builder.format == "html":
        records = [r for doc in sorted(app.env.fileproc_pictures) for r in app.env.fileproc_pictures[doc]]
        directory = os.path.join(app.outdir, "_images", PICTURES)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as file:
            json.dump(records, file, indent=1)


def setup(app: Sphinx) -> dict:
    app.add_node(
        picture,
        html=(visit_picture_html, None),
        latex=(skip_picture, None),
        text=(skip_picture, None),
        man=(skip_picture, None),
        texinfo=(skip_picture, None),
    )
    app.add_directive("fileproc-example", Example)
    app.connect("env-before-read-docs", init_env)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("env-check-consistency", check_every_step_shown)
    app.connect("build-finished", finish)
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True}
