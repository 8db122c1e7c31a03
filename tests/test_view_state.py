"""The views keep no live state of their own: no counters, copies or pollers (issue 10).

Param is the only live state: a view binds to the core's parameters through the one live
feed (`app/views/live.py`), which alone may schedule periodic work or touch threads. The
views' source is read as a syntax tree, so a renamed counter, a timer or a sleep loop is
found whatever it is called; `test_the_checker_finds_*` shows what it catches.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import param
import pytest

import hybrid_audio

VIEWS = Path(__file__).resolve().parent.parent / "app" / "views"
#: The one adapter allowed to poll and to use threads.
LIVE_FEED = "live.py"
#: Calls that schedule work later or elsewhere: a poller, a timer, a task or a thread.
SCHEDULERS = frozenset(
    {
        "add_periodic_callback",
        "add_timeout_callback",
        "add_next_tick_callback",
        "schedule_task",
        "execute",
        "Thread",
        "Timer",
        "sleep",
        "run_in_executor",
        "create_task",
    }
)
#: Modules a view has no use for once the live feed delivers every change.
THREAD_MODULES = frozenset({"threading", "time", "asyncio", "concurrent", "sched"})
#: (file, function) allowed one scheduler call, and why. The function's own nested
#: callbacks are separate functions here, so one that re-arms itself is still found.
ALLOWED = {
    # a one-shot delay so a ticked box reaches the server before the click is handled
    ("cache.py", "_handle_invalidate_click"): "add_timeout_callback",
}
#: View parameters named like a core number that are the user's input, not a copy of it.
ALLOWED_NAMES = {
    # the seed typed for a new campaign, not the running rotation's seed
    ("CampaignView", "seed"),
}


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


class _Finder(ast.NodeVisitor):
    """Every place in one view module that holds, copies or polls state."""

    def __init__(self, filename: str, core_numbers: frozenset[str]) -> None:
        self.filename = filename
        self.core_numbers = core_numbers
        self.functions: list[str] = []
        #: per enclosing function: the names it rebinds outside itself (nonlocal/global)
        self.outer: list[set[str]] = []
        self.classes: list[str] = []
        self.found: list[str] = []

    def _add(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.filename}:{getattr(node, 'lineno', 0)}: {what}")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        declared = {
            name
            for inner in ast.walk(node)
            if isinstance(inner, ast.Nonlocal | ast.Global)
            for name in inner.names
        }
        self.functions.append(node.name)
        self.outer.append(declared)
        self.generic_visit(node)
        self.outer.pop()
        self.functions.pop()

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.visit_FunctionDef(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in THREAD_MODULES:
                self._add(node, f"imports {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if (node.module or "").split(".")[0] in THREAD_MODULES:
            self._add(node, f"imports from {node.module}")

    def visit_Call(self, node: ast.Call) -> None:
        name = _called_name(node)
        if name in SCHEDULERS:
            function = self.functions[-1] if self.functions else "<module>"
            if ALLOWED.get((self.filename, function)) != name:
                self._add(node, f"{name}() in {function}")
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self._add(node, "a while loop (a view reacts to changes; it never waits for them)")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        # `self.seen += 1`, `state["n"] += 1`: a counter kept by the view. Local
        # accumulators (`text += "…"`, `count += 1` in one call) are plain names.
        target = node.target
        if not isinstance(target, ast.Name) or (self.outer and target.id in self.outer[-1]):
            self._add(node, f"{ast.unparse(node)} (a counter)")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        # `self.seen = self.seen + 1`: the same counter, spelt out
        if isinstance(node.value, ast.BinOp):
            operands = {ast.unparse(node.value.left), ast.unparse(node.value.right)}
            for target in node.targets:
                if isinstance(target, ast.Attribute | ast.Subscript) and (
                    ast.unparse(target) in operands
                ):
                    self._add(node, f"{ast.unparse(target)} = itself ± … (a counter)")
        # `done = param.Integer(…)` in a view class: a copy of a core number
        if self.classes and not self.functions and _declares_number(node.value):
            for target in node.targets:
                name = target.id if isinstance(target, ast.Name) else None
                if name in self.core_numbers and (self.classes[-1], name) not in ALLOWED_NAMES:
                    self._add(node, f"{self.classes[-1]}.{name} mirrors a core parameter")
        self.generic_visit(node)


def _declares_number(value: ast.expr) -> bool:
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr in {"Integer", "Number"}
    )


def core_numbers() -> frozenset[str]:
    """The names of the core's numeric parameters (revisions, progress, counts…)."""
    names: set[str] = set()
    for module in pkgutil.walk_packages(hybrid_audio.__path__, "hybrid_audio."):
        if module.name.startswith(("hybrid_audio.api", "hybrid_audio.cli")):
            continue
        loaded = importlib.import_module(module.name)
        for _, cls in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(cls, param.Parameterized) and cls.__module__ == loaded.__name__:
                names |= {
                    name
                    for name, parameter in cls.param.objects("existing").items()
                    if isinstance(parameter, param.Number)  # Integer is a Number
                }
    return frozenset(names)


def held_state(source: str, filename: str, numbers: frozenset[str]) -> list[str]:
    """What in `source` (one view module) holds, copies or polls state."""
    finder = _Finder(filename, numbers)
    finder.visit(ast.parse(source))
    return finder.found


@pytest.fixture(scope="module")
def numbers() -> frozenset[str]:
    return core_numbers()


def _views() -> Iterator[Path]:
    return (path for path in sorted(VIEWS.glob("*.py")) if path.name != LIVE_FEED)


def test_no_view_but_the_live_feed_holds_counters_or_pollers(numbers: frozenset[str]) -> None:
    views = list(_views())
    assert {"assemble.py", "cache.py", "rotation.py"} <= {path.name for path in views}
    found = [line for path in views for line in held_state(path.read_text(), path.name, numbers)]
    assert not found, "\n".join(found)


def test_the_live_feed_is_the_one_poller(numbers: frozenset[str]) -> None:
    feed = held_state((VIEWS / LIVE_FEED).read_text(), LIVE_FEED, numbers)
    assert any("add_periodic_callback" in line for line in feed), feed


def test_the_core_numbers_include_the_published_state(numbers: frozenset[str]) -> None:
    """The names a copy would most likely take are known to the checker."""
    assert {"revision", "done", "total", "error_count"} <= numbers


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("class V:\n    stems_seen = 0\n    def f(self):\n        self.stems_seen += 1\n", "+="),
        ("def f(self):\n    self.n = self.n + 1\n", "itself"),
        ("def f(self):\n    self.state['n'] += 1\n", "+="),
        ("def f():\n    nonlocal seen\n    seen += 1\n", "seen +="),
        ("class V:\n    done = param.Integer(default=0)\n", "mirrors"),
        ("class V:\n    revision = param.Number(0)\n", "mirrors"),
        ("import threading\n", "imports threading"),
        ("from time import sleep\n", "imports from time"),
        ("def f():\n    threading.Timer(1, f).start()\n", "Timer()"),
        ("def f():\n    pn.state.schedule_task('x', f, period='1s')\n", "schedule_task()"),
        ("def f():\n    pn.state.execute(g)\n", "execute()"),
        ("def f():\n    while True:\n        g()\n", "while loop"),
        ("def f(doc):\n    doc.add_periodic_callback(f, 500)\n", "add_periodic_callback()"),
        (
            "def _handle_invalidate_click(self):\n"
            "    def later():\n"
            "        doc.add_timeout_callback(later, 50)\n"
            "    doc.add_timeout_callback(later, 50)\n",
            "add_timeout_callback() in later",
        ),
    ],
)
def test_the_checker_finds_held_state(source: str, fragment: str) -> None:
    found = held_state(source, "cache.py", frozenset({"done", "revision"}))
    assert any(fragment in line for line in found), found


def test_the_checker_leaves_local_text_and_inputs_alone() -> None:
    source = (
        "class V:\n"
        "    seed = param.Integer(default=None)\n"  # a form input (not a core number here)
        "    def f(self):\n"
        "        text = 'a'\n"
        "        text += 'b'\n"
        "        self.param.trigger('stale_checked')\n"
    )
    assert held_state(source, "x.py", frozenset({"done"})) == []
