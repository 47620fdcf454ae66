"""Schema migrations: the packaged Alembic revisions on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from PIL import Image

from fileproc_wsgi.store import InstructionStore, metadata, migrations, upgrade


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return migrations.current(connection)
    finally:
        engine.dispose()


def _differences(url: str) -> list:
    """What Alembic's autogenerate sees between the database and store.py's schema."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"include_name": lambda name, kind, parent: name != migrations.VERSION_TABLE}
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_a_fresh_database_is_upgraded_to_the_schema_of_the_store(database_url):
    assert upgrade(database_url) == (None, migrations.head())
    assert _tables(database_url) == {"fileproc_jobs", "fileproc_generation", migrations.VERSION_TABLE}
    assert _revision(database_url) == migrations.head()
    assert _differences(database_url) == []


def test_upgrading_twice_changes_nothing(database_url):
    upgrade(database_url)
    statements = []
    store = InstructionStore(database_url)
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        assert store.upgrade() == (migrations.head(), migrations.head())
    finally:
        store.dispose()
    assert not [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT"))]


def test_a_database_made_before_migrations_is_stamped_and_keeps_its_rows(database_url):
    engine = sa.create_engine(database_url)
    # What create_tables() made before migrations: the jobs table alone.
    metadata.create_all(engine, tables=[metadata.tables["fileproc_jobs"]])
    with engine.begin() as connection:
        connection.execute(
            metadata.tables["fileproc_jobs"].insert(),
            {
                "checksum": "0" * 32,
                "instructions": "a.png | fit 10x",
                "source": "a.png",
                "output_format": "png",
                "state": "pending",
                "token": 0,
                "attempts": 0,
                "created_at": 1.0,
            },
        )
    engine.dispose()
    assert upgrade(database_url) == (None, migrations.head())
    assert _revision(database_url) == migrations.head()
    store = InstructionStore(database_url)
    try:
        assert store.get("0" * 32).source == "a.png"
    finally:
        store.dispose()


def test_the_store_migrates_on_first_use_into_its_own_version_table(database_url):
    store = InstructionStore(database_url)
    try:
        assert store.find("0" * 32) is None
    finally:
        store.dispose()
    assert _revision(database_url) == migrations.head()
    assert "alembic_version" not in _tables(database_url), "a host app's own Alembic table stays free"


def test_revisions_need_no_ini_file_and_form_one_line():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert script.get_heads() == [migrations.head()]
    assert script.get_base() == migrations.INITIAL


def test_the_head_known_without_alembic_is_the_scripts_head():
    # HEAD is what a store compares the database with on first use; a new revision
    # without raising it would leave every database unmigrated.
    assert migrations.HEAD == migrations.head()


_FIRST_USE = """
import sys
from fileproc_wsgi.config import Config
from fileproc_wsgi.registrar import Registrar

root = sys.argv[1]
config = Config(database_url=sys.argv[2], source_roots={"default": root}, storage=root + "/results")
registrar = Registrar(config)
print(registrar.register("a.png | fit 10x").url)
registrar.close()
print("alembic" in sys.modules)
"""


def _first_use(tmp_path, url: str) -> tuple[str, bool]:
    Image.new("RGB", (40, 20), "red").save(tmp_path / "a.png")
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_USE, str(tmp_path), url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    url_line, imported = done.stdout.split()
    return url_line, imported == "True"


def test_a_store_at_head_is_used_without_importing_alembic(database_url, tmp_path):
    upgrade(database_url)
    url, imported = _first_use(tmp_path, database_url)
    assert url.startswith("/_fp/")
    assert not imported, "a process registering on an up-to-date store imported Alembic"


def test_a_store_behind_head_is_migrated_on_first_use(database_url, tmp_path):
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrations.alembic_config(connection), migrations.INITIAL)
    finally:
        engine.dispose()
    assert _revision(database_url) == migrations.INITIAL
    url, imported = _first_use(tmp_path, database_url)
    assert imported
    assert _revision(database_url) == migrations.HEAD
    assert "fileproc_generation" in _tables(database_url)


def test_an_empty_database_is_migrated_on_first_use(database_url, tmp_path):
    url, imported = _first_use(tmp_path, database_url)
    assert url.startswith("/_fp/") and imported
    assert _revision(database_url) == migrations.HEAD


_RACE = """
import sys, time
from fileproc_wsgi.config import Config
from fileproc_wsgi.registrar import Registrar

root, url, width, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
registrar = Registrar(Config(database_url=url, source_roots={"default": root}, storage=root + "/results"))
time.sleep(max(0.0, start - time.time()))  # every process reaches its first use together
print(registrar.register(f"a.png | fit {width}x").url)
registrar.close()
"""


def test_processes_starting_together_on_an_empty_database_all_register(database_url, tmp_path):
    Image.new("RGB", (40, 20), "red").save(tmp_path / "a.png")
    start = time.time() + 3
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(tmp_path), database_url, str(width), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for width in range(10, 16)
    ]
    outcomes = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * 6, [err for _, err in outcomes]
    assert len({out for out, _ in outcomes}) == 6
    assert _revision(database_url) == migrations.HEAD
    store = InstructionStore(database_url)
    try:
        assert store.count_by_state() == {"pending": 6}
    finally:
        store.dispose()
