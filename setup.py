"""Packaging for fileproc-wsgi.

The Django and Jinja2 adapters live under ``integrations/`` and are packaged only once
they exist (a directory with an ``__init__.py``), decided when the package is built.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
INTEGRATIONS = ("fileproc_django", "fileproc_flask", "fileproc_jinja2")

packages = find_packages(include=["fileproc_wsgi", "fileproc_wsgi.*"])
package_dir = {}
for name in INTEGRATIONS:
    if (HERE / "integrations" / name / "__init__.py").is_file():
        packages += find_packages("integrations", include=[name, f"{name}.*"])
        package_dir[name] = f"integrations/{name}"

PDF = ["pypdfium2>=4.30"]
VIDEO = ["av>=12"]
WAND = ["Wand>=0.6.13"]
# LunaSVG (C++, in-process, MIT): renders SVG with no file, network or script access of
# its own, and 20-40x faster here than resvg-py (bench/svg.py).
SVG = ["pillow-lunasvg>=0.1.1"]
# libheif and its HEVC decoder, bundled in the wheels (faster than ImageMagick's HEIC coder:
# bench/heif.py).
HEIF = ["pillow-heif>=1.1"]
# LibRaw, bundled in the wheels: camera raw files (DNG, CR2, CR3, NEF, ARW ...).
RAW = ["rawpy>=0.21"]
# libjxl through a Rust binding, bundled in the wheels: JPEG XL sources.
JXL = ["pillow-jxl-plugin>=1.3"]
DJANGO = ["Django>=4.2"]
JINJA2 = ["Jinja2>=3.1"]
# The documentation site (docs/): built with warnings as errors by tests/test_docs.py.
DOCS = ["sphinx>=8", "furo", "myst-parser>=4"]
# The test suite runs both adapters, the Flask example and a real browser (Playwright
# driving the system's Chromium, so no browser download).
TEST = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "psycopg[binary]>=3.1",
    "ruff>=0.5",
    *DJANGO,
    *JINJA2,
    "Flask>=3.0",
    "playwright>=1.45",
    "gunicorn>=22",  # the multi-process tests run real pre-forking servers
    "prometheus-client>=0.20",  # tests/test_metrics.py scrapes a real server's metrics
    "boto3>=1.34",
    "django-storages[s3]>=1.14",  # Django sources on S3 through django-storages' S3Storage
    "moto[server]>=5",  # a real S3-compatible HTTP server for the tests (moto_server)
    # The plugin tests pip-install examples/fileproc-watermark offline (no build
    # isolation), and setuptools before 70.1 builds a wheel only with this.
    "wheel>=0.43",
    # Office documents made by the tests (the office engine itself needs only LibreOffice).
    "python-docx>=1.1",
    "openpyxl>=3.1",
    "python-pptx>=1.0",
    # Camera raw fixtures: the raw tests write DNG files themselves (no camera files ship).
    "tifffile>=2024.1",
    # The type check of the package and the adapters ([tool.mypy]), with the stubs of the
    # libraries they use that ship no annotations of their own.
    "mypy>=1.10",
    "types-webob",
    "types-waitress",
    "django-stubs>=6.1",
    "types-boto3[s3]>=1.43",
    # Every engine is tested for real: a missing one fails the suite rather than skipping.
    *PDF,
    *VIDEO,
    *WAND,
    *SVG,
    *HEIF,
    *RAW,
    *JXL,
    *DOCS,
]

setup(
    name="fileproc-wsgi",
    version="0.1.0",
    description="Thumbnails for any WSGI app: registered while rendering, processed on first request",
    long_description=README.read_text(encoding="utf-8") if README.is_file() else "",
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    packages=packages,
    package_dir=package_dir,
    include_package_data=True,
    # The Alembic environment's template: revisions and env.py are modules already.
    # py.typed: the packages carry their own type annotations (PEP 561).
    package_data={
        "fileproc_wsgi": ["py.typed"],
        "fileproc_wsgi.migrations": ["script.py.mako"],
        "fileproc_django": ["py.typed"],
        "fileproc_jinja2": ["py.typed"],
        "fileproc_flask": ["py.typed"],
    },
    zip_safe=False,
    install_requires=[
        "WebOb>=1.8",
        "Pillow>=11.3",
        "SQLAlchemy>=2.0",
        "alembic>=1.13",  # the store's schema migrations (fileproc_wsgi/migrations)
        "waitress>=3.0",
    ],
    extras_require={
        "pdf": PDF,
        "video": VIDEO,
        "wand": WAND,
        "svg": SVG,
        "heif": HEIF,
        "raw": RAW,
        "jxl": JXL,
        "django": DJANGO,
        "jinja2": JINJA2,
        "flask": ["Flask>=3.0", *JINJA2],
        "s3": ["boto3>=1.34"],
        "postgresql": ["psycopg[binary]>=3.1"],
        # fileproc_wsgi.metrics: Prometheus metrics, and spans when OpenTelemetry is there.
        "metrics": ["prometheus-client>=0.20", "opentelemetry-api>=1.20"],
        "docs": DOCS,
        "test": TEST,
        # bin/dev test runs the Django tests again on the oldest supported Django (tox.ini).
        "dev": ["tox>=4.11"],
        "bench": [
            "pyvips>=2.2",
            "pyvips-binary>=8.16",
            "sorl-thumbnail>=12.10",
            "easy-thumbnails>=2.9",
            *DJANGO,
            # bench/quality.py: bytes at equal quality (SSIM and SSIMULACRA2 scores).
            "scikit-image>=0.24",
            "ssimulacra2>=0.3",
            "playwright>=1.45",  # bench/pageload.py loads the gallery in the system's Chromium
        ],
    },
    entry_points={"console_scripts": ["fileproc = fileproc_wsgi.cli:main"]},
    classifiers=[
        "Framework :: Django",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
        "Topic :: Multimedia :: Graphics",
    ],
)
