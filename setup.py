"""Which packages fileproc-wsgi ships; everything else is in pyproject.toml's [project].

The Django, Jinja2 and Flask adapters live under ``integrations/`` and are packaged only
once they exist (a directory with an ``__init__.py``), decided when the package is built.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
INTEGRATIONS = ("fileproc_django", "fileproc_flask", "fileproc_jinja2")

packages = find_packages(include=["fileproc_wsgi", "fileproc_wsgi.*"])
package_dir = {}
for name in INTEGRATIONS:
    if (HERE / "integrations" / name / "__init__.py").is_file():
        packages += find_packages("integrations", include=[name, f"{name}.*"])
        package_dir[name] = f"integrations/{name}"

setup(packages=packages, package_dir=package_dir)
