"""The ``fileproc-cli`` directive: the ``fileproc`` command's reference, from its parser.

The parser is the one :func:`fileproc_wsgi.cli.main` parses with,
:func:`fileproc_wsgi.cli.build_parser`. Each subcommand becomes a section
(``fileproc-<name>`` as its anchor) with its help, its usage and its arguments.
"""

from __future__ import annotations

import argparse
import inspect

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def fileproc_parser() -> argparse.ArgumentParser:
    """The parser of the ``fileproc`` command."""
    from fileproc_wsgi import cli

    return cli.build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


class CommandLine(SphinxDirective):
    """Sections for every subcommand of ``fileproc``."""

    def run(self) -> list[nodes.Node]:
        from fileproc_wsgi import cli

        self.env.note_dependency(inspect.getsourcefile(cli))
        parser = fileproc_parser()
        helps = _helps(parser)
        result: list[nodes.Node] = [
            nodes.paragraph("", parser.description or ""),
            nodes.literal_block("", parser.format_usage().strip(), language="text"),
        ]
        for name, command in subcommands(parser).items():
            section_id = f"fileproc-{name}"
            section = nodes.section(ids=[section_id], names=[section_id])
            self.state.document.note_implicit_target(section)
            title = nodes.title()
            title += nodes.literal("", f"fileproc {name}")
            section += title
            section += nodes.paragraph("", _sentence(helps.get(name, "")))
            section += nodes.literal_block("", command.format_usage().strip(), language="text")
            arguments = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
            if arguments:
                section += self._arguments(command, arguments)
            result.append(section)
        return result

    def _arguments(self, command, arguments: list[argparse.Action]) -> nodes.definition_list:
        listing = nodes.definition_list()
        formatter = command._get_formatter()
        for action in arguments:
            if action.option_strings:
                names = ", ".join(action.option_strings)
                if action.nargs != 0:
                    names += " " + formatter._format_args(action, action.dest.upper())
            else:
                names = formatter._format_args(action, action.dest)
            text = _sentence(action.help or "")
            default = action.default
            if (
                action.option_strings
                and action.nargs != 0
                and default not in (None, argparse.SUPPRESS)
                and "default" not in text
            ):
                text = f"{text} Default: {default}.".strip()
            item = nodes.definition_list_item()
            term = nodes.term()
            term += nodes.literal("", names)
            item += term
            definition = nodes.definition()
            definition += nodes.paragraph("", text)
            item += definition
            listing += item
        return listing


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def setup(app: Sphinx) -> dict:
    app.add_directive("fileproc-cli", CommandLine)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
