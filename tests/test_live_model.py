"""The live model without widgets: drive the core objects, watch their parameters change.

Param is the only live state inside a process; changes made by another process arrive
through the state database's revision counters when `Workspace.refresh()` reads them. Each
test builds a workspace over a fresh base dir (real SQLite, the real Piper engine) and
registers plain param watchers — no Panel.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import param
import pytest

from hybrid_audio.config import Settings
from hybrid_audio.jobs import Job, JobState
from hybrid_audio.live import read_revisions
from hybrid_audio.workspace import Workspace
from tests.api_server import REPO, make_base_dir


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return make_base_dir(tmp_path)


@pytest.fixture
def workspace(base_dir: Path, piper):
    workspace = Workspace.build(Settings(base_dir=base_dir), engine=piper)
    yield workspace
    workspace.close()


def _watch(obj: param.Parameterized, name: str) -> list[object]:
    """Every new value `obj.name` takes, as a watcher receives it."""
    seen: list[object] = []
    obj.param.watch(lambda event: seen.append(event.new), [name])
    return seen


def run_elsewhere(code: str, base_dir: Path) -> None:
    """`code` in another Python process, with `settings` for the same base dir."""
    prelude = (
        "from hybrid_audio.config import Settings\n"
        f"settings = Settings(base_dir={str(base_dir)!r})\n"
    )
    subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], check=True, cwd=REPO, timeout=60
    )


def test_storing_and_invalidating_a_stem_raise_the_cache_revision(workspace: Workspace) -> None:
    """A watcher of `StemCache.revision` hears every store and invalidate, at once."""
    cache = workspace.cache
    seen = _watch(cache, "revision")
    start = cache.revision
    workspace.generator.generate_name("Ana")
    assert seen == [start + 1]
    workspace.generator.generate_name("Ana")  # a cache hit writes nothing
    assert seen == [start + 1]
    assert cache.invalidate("stem.name.ana")
    assert seen == [start + 1, start + 2]
    assert not cache.invalidate("stem.name.ana")  # nothing to forget: nothing changed
    assert cache.revision == read_revisions(workspace.database.connection())["stems"]


def test_another_process_reaches_this_one_through_refresh(
    workspace: Workspace, base_dir: Path
) -> None:
    """Another process's invalidation and rotation steps change this process's params once
    `refresh()` reads the revision counters — and not before."""
    workspace.generator.generate_name("Ana")
    workspace.refresh()
    revisions, cursors = _watch(workspace.cache, "revision"), _watch(workspace.rotation, "cursors")
    run_elsewhere(
        """
        from hybrid_audio.cache import StemCache
        from hybrid_audio.rotation import RotationEngine
        cache = StemCache(stems_dir=settings.stems_dir, database_path=settings.database_path)
        assert cache.invalidate("stem.name.ana")
        RotationEngine(settings=settings, seed=settings.rotation_seed).take("name", 3)
        """,
        base_dir,
    )
    assert (revisions, cursors) == ([], [])  # nothing arrives by itself
    workspace.refresh()
    assert len(revisions) == 1
    assert workspace.cache.get("stem.name.ana") is None
    assert len(cursors) == 1
    assert workspace.rotation.cursors["name"].position == 3
    workspace.refresh()  # nothing new: no event
    assert (len(revisions), len(cursors)) == (1, 1)


def test_a_rotation_step_updates_cursors_and_last_step(workspace: Workspace) -> None:
    """Stepping and resetting publish the cursor (and the step) on the engine's params."""
    rotation = workspace.rotation
    cursors, steps = _watch(rotation, "cursors"), _watch(rotation, "last_step")
    taken = rotation.take("developer", 2)
    assert steps == [taken[-1]]
    assert cursors[-1]["developer"].position == 2
    assert rotation.cursors == rotation.state()  # the published cursors are the stored ones
    rotation.reset("developer")
    assert cursors[-1]["developer"].position == 0
    assert rotation.cursors == rotation.state()


def test_threads_never_publish_an_older_cursor(workspace: Workspace) -> None:
    """Many threads stepping at once: the cursor shown at the end is the stored one."""
    rotation = workspace.rotation
    threads = [threading.Thread(target=rotation.take, args=("name", 1)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shown = rotation.cursors["name"]
    assert shown.cycle * shown.size + shown.position == 8
    assert rotation.cursors == rotation.state()


def test_a_replaced_dataset_file_reaches_the_cursors(workspace: Workspace) -> None:
    """An import rewrites a dataset file: `refresh()` shows the new size, no step needed."""
    rotation = workspace.rotation
    rotation.take("name", 1)
    Path(workspace.settings.common_names_file).write_text("Uno\nDos\nTres\n")
    seen = _watch(rotation, "cursors")
    workspace.refresh()
    assert seen
    assert rotation.cursors["name"].stale  # the next step starts a new cycle
    assert {step.item for step in rotation.preview("name", 3)} == {"Uno", "Dos", "Tres"}


def test_job_progress_is_published_on_the_job(workspace: Workspace) -> None:
    """A bulk job's own params carry its progress, from its worker thread."""
    job = workspace.start_bulk_generation(["Ana", "Bea"], [])
    done = _watch(job, "done")
    workspace.jobs.wait(job.id, timeout=30)
    assert job.state == JobState.DONE
    assert job.done == job.total == 2
    assert done  # watchers heard the steps (or at least the last one)
    assert done[-1] == 2


def test_a_job_another_runner_owns_is_followed_by_refresh(
    workspace: Workspace, base_dir: Path, piper
) -> None:
    """A job run by another workspace (as another server worker would) is read here as a
    snapshot; `refresh()` keeps that same object's params up to date with its row."""
    other = Workspace.build(Settings(base_dir=base_dir), engine=piper)
    release = threading.Event()

    def work(job: Job) -> str:
        job.param.update(total=3)
        job.advance(message="first")
        release.wait(10)
        return "ok"

    try:
        theirs = other.jobs.submit("demo", work)
        ours = workspace.jobs.get(theirs.id)
        assert ours is not theirs
        assert workspace.jobs.get(theirs.id) is ours  # one snapshot while it is in use
        states = _watch(ours, "state")
        release.set()
        other.jobs.wait(theirs.id, timeout=10)
        workspace.refresh()
        assert states[-1] == JobState.DONE
        assert ours.done == 1
        assert ours.result == "ok"
    finally:
        release.set()
        other.close()


def test_a_rolled_back_write_leaves_the_counters_alone(workspace: Workspace) -> None:
    """Counters move in the writing transaction: a write that fails bumps nothing."""
    database = workspace.database
    before = read_revisions(database.connection())

    def write_then_die() -> None:
        with database.write() as db:
            db.execute("DELETE FROM rotation_cursors")
            db.execute(
                "INSERT INTO rotation_cursors VALUES ('name', 0, 0, 0, 1, 'f', 'now', 'now')"
            )
            raise RuntimeError("the writer dies before COMMIT")

    with pytest.raises(RuntimeError):
        write_then_die()
    assert read_revisions(database.connection()) == before


# --- the import graph -------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


#: The server's composition root: it mounts app/dashboard.py by file path (Panel's ASGI
#: loader, imported inside the function that mounts it); it imports no view either.
_MOUNTS_THE_DASHBOARD = "hybrid_audio/api/app.py"


def test_no_core_module_imports_a_view_or_panel() -> None:
    """The core (hybrid_audio/) never imports the app's views, nor Panel or Bokeh (only the
    server module that mounts the dashboard loads Panel)."""
    offenders = {}
    for path in (REPO / "hybrid_audio").rglob("*.py"):
        name = str(path.relative_to(REPO))
        banned = ("app",) if name == _MOUNTS_THE_DASHBOARD else ("app", "panel", "bokeh")
        found = sorted(m for m in _imports(path) if m.split(".")[0] in banned)
        if found:
            offenders[name] = found
    assert offenders == {}


def test_rotation_sits_below_assembly() -> None:
    """Importing the rotation (or the whole core's live model) loads no assembly and no
    Panel: the rotation knows nothing of messages, the workspace nothing of views."""
    probe = (
        "import sys\n"
        "import hybrid_audio.rotation, hybrid_audio.feistel\n"
        "assert 'hybrid_audio.assembly' not in sys.modules, 'rotation imports assembly'\n"
        "import hybrid_audio.workspace\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('panel', 'app'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO, timeout=60)
