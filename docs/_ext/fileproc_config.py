"""The ``fileproc-config`` directive: tables of :class:`fileproc_wsgi.config.Config` fields.

Each field's name, environment variable and default come from
:func:`dataclasses.fields`; its description from the comment written in ``config.py``
itself, read with :mod:`tokenize`: the block of ``#`` lines right above the field, or the
comment at the end of its line. A comment above several fields (``download_timeout``,
``max_redirects`` ...) describes the first of them only.

A field without a comment warns, so that with ``-W`` a description cannot go missing.
Every field must appear in some table of the site: one that none shows warns at the end
of the build.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import inspect
import io
import tokenize

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def field_comments(source: str, class_name: str = "Config") -> dict[str, str]:
    """``{field name: comment text}`` for the annotated fields of ``class_name`` in ``source``."""
    comments: dict[int, str] = {}  # line number -> text of the comment on it
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    tree = ast.parse(source)
    found = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name)
    result: dict[str, str] = {}
    for statement in found.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        lines: list[str] = []
        line = statement.lineno - 1
        while line in comments and line not in code_lines:
            lines.insert(0, comments[line])
            line -= 1
        trailing = comments.get(statement.end_lineno)
        if trailing and statement.end_lineno in code_lines:
            lines.append(trailing)
        if lines:
            result[statement.target.id] = " ".join(lines)
    return result


def describe(config_class: type) -> list[tuple[dataclasses.Field, str | None, str]]:
    """``(field, description or None, where it came from)`` for every field, in order."""
    written = field_comments(inspect.getsource(inspect.getmodule(config_class)), config_class.__name__)
    described = []
    for field in dataclasses.fields(config_class):
        described.append((field, written.get(field.name), "config.py"))
    return described


def default_text(field: dataclasses.Field) -> str:
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return repr(field.default)


class ConfigTable(SphinxDirective):
    """A table of the fields whose names match ``:include:`` and not ``:exclude:``
    (space-separated shell patterns)."""

    option_spec = {"include": directives.unchanged, "exclude": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        from fileproc_wsgi.config import ENV_PREFIX, Config

        include = (self.options.get("include") or "*").split()
        exclude = (self.options.get("exclude") or "").split()
        self.env.note_dependency(inspect.getsourcefile(Config))
        rows = []
        shown = self.env.fileproc_config_shown
        for field, text, _origin in describe(Config):
            name = field.name
            if not any(fnmatch.fnmatch(name, p) for p in include) or any(
                fnmatch.fnmatch(name, p) for p in exclude
            ):
                continue
            if text is None:
                logger.warning(
                    "Config.%s has no description: write a comment above it in config.py",
                    name,
                    location=self.get_location(),
                )
                text = ""
            shown.setdefault(name, self.env.docname)
            rows.append((name, ENV_PREFIX + name.upper(), default_text(field), text))
        return [self._table(rows)]

    def _table(self, rows: list[tuple[str, str, str, str]]) -> nodes.table:
        table = nodes.table(classes=["fileproc-config"])
        group = nodes.tgroup(cols=3)
        table += group
        for width in (30, 20, 50):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row([nodes.Text("setting"), nodes.Text("default"), nodes.Text("meaning")])
        body = nodes.tbody()
        group += body
        for name, variable, default, text in rows:
            target = nodes.target("", "", ids=[nodes.make_id(f"config-{name}")], names=[f"config-{name}"])
            self.state.document.note_explicit_target(target)
            label = nodes.container()
            label += nodes.paragraph("", "", target, nodes.literal(name, name))
            label += nodes.paragraph("", "", nodes.literal(variable, variable), classes=["fileproc-env"])
            meaning = nodes.paragraph()
            meaning += self._inline(text)
            body += self._row([label, nodes.literal(default, default), meaning])
        return table

    def _inline(self, text: str) -> list[nodes.Node]:
        # Comments in config.py are plain prose ("AWS_*", "10^8"), not reStructuredText.
        return [nodes.Text(text)]

    @staticmethod
    def _row(cells: list[nodes.Node]) -> nodes.row:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += (
                cell
                if isinstance(cell, nodes.Element) and not isinstance(cell, nodes.Inline)
                else (nodes.paragraph("", "", cell))
            )
            row += entry
        return row


def check_every_field_shown(app: Sphinx, env) -> None:
    from fileproc_wsgi.config import Config

    shown = env.fileproc_config_shown
    for field in dataclasses.fields(Config):
        if field.name not in shown:
            logger.warning("Config.%s is in no fileproc-config table of the documentation", field.name)


def init_env(app: Sphinx, env, docnames) -> None:
    if not hasattr(env, "fileproc_config_shown"):
        env.fileproc_config_shown = {}


def merge(app: Sphinx, env, docnames, other) -> None:
    env.fileproc_config_shown.update(getattr(other, "fileproc_config_shown", {}))


def purge(app: Sphinx, env, docname: str) -> None:
    shown = getattr(env, "fileproc_config_shown", {})
    for name in [n for n, doc in shown.items() if doc == docname]:
        del shown[name]


def setup(app: Sphinx) -> dict:
    app.add_directive("fileproc-config", ConfigTable)
    app.connect("env-before-read-docs", init_env)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("env-check-consistency", check_every_field_shown)
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True}
