"""Sphinx configuration of the fileproc_wsgi documentation.

Build with ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``; the
build imports the project (autodoc, the generated configuration and command-line pages)
and runs it (the pictures of the instruction steps), offline.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.join(HERE, "..", "integrations"))
sys.path.insert(0, os.path.join(HERE, ".."))

import fileproc_wsgi  # noqa: E402

project = "fileproc_wsgi"
author = "the fileproc_wsgi authors"
copyright = "the fileproc_wsgi authors"  # noqa: A001 - Sphinx's own name for it
release = version = fileproc_wsgi.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "fileproc_config",
    "fileproc_cli",
    "fileproc_examples",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
root_doc = "index"

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]
# A link to a page or an anchor that does not exist is a warning, and -W makes it an error.
myst_all_links_external = False
suppress_warnings: list[str] = []

html_theme = "furo"
html_title = "fileproc_wsgi"
html_static_path = ["_static"]
html_css_files = ["fileproc.css"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
autoclass_content = "class"

# Every cross-reference must resolve, except to what lives outside this project (no
# intersphinx: the build needs no network).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(str|int|float|bool|bytes|object|None|dict|list|tuple|set|type|callable)"),
    (r"py:.*", r"(typing|collections|collections\.abc|types|dataclasses|threading|argparse)\..*"),
    (r"py:.*", r"(Any|Mapping|Iterable|Iterator|Callable|Sequence|MappingProxyType|BinaryIO|NoReturn)"),
    (r"py:.*", r"(webob|jinja2|flask|django|sqlalchemy|PIL|boto3|botocore)(\..*)?"),
    (r"py:.*", r"(Flask|Environment|Extension|Request|Response|Image|Engine)"),
]
# Internal names that public docstrings point at, which the API reference leaves out.
nitpick_ignore = [
    ("py:class", "LeaseLostError"),
    ("py:mod", "fileproc_wsgi.store.migrations"),
]
