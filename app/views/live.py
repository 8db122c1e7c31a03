"""The one adapter between the core's live parameters and Panel sessions.

The core publishes its state as parameters (`StemCache.revision`, `RotationEngine.cursors`
and `last_step`, a `Job`'s `done`/`total`/`state`/`message`, `Assembler.last_result`, the
contract's parameters…). They change on whatever thread did the work: a session's own
callback, a job's worker thread, or — through the state database's revision counters read
by `Workspace.refresh()` — another process. A view must neither touch its session's document
from a foreign thread nor run its derivations on a job's thread (a bulk job would re-draw
the cache table once per stem, on its own time). So views bind to `live(workspace).ref(obj,
"name")` instead of `obj.param.name`:

- a change made on the session's own thread (a button's callback) reaches the view at once;
- changes made on other threads are coalesced and applied on the session's event loop by
  one periodic callback per session (`PERIOD_MS`), which first calls `Workspace.refresh()`,
  so other processes' changes arrive the same way;
- outside a server session (tests, scripts, notebooks) every change is applied at once.

A reference is the core parameter's value as delivered to one session, nothing more: the
views keep no counters, copies or pollers of their own.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from typing import Any

import panel as pn
import param
from bokeh.document import Document

from hybrid_audio.workspace import Workspace

log = logging.getLogger("hybrid_audio.dashboard")

#: Milliseconds between two deliveries of other threads' and processes' changes.
PERIOD_MS = 500

_Key = tuple[int, str]


class _Delivered(param.Parameterized):
    """One core parameter's value as one session last received it."""

    value = param.Parameter(doc="The core parameter's value, delivered on the session's thread.")


class LiveFeed:
    """Delivers core parameter changes to one Panel session (or, without one, at once)."""

    def __init__(self, workspace: Workspace, doc: Document | None) -> None:
        # Weak: a feed outside a session lives as long as its workspace, not longer.
        self._workspace = weakref.ref(workspace)
        self._doc = doc
        self._lock = threading.Lock()
        # (id of the core object, parameter) → (the object, its delivered value, the watcher)
        self._refs: dict[_Key, tuple[param.Parameterized, _Delivered, Any]] = {}
        self._pending: set[_Key] = set()
        self._callback = None
        workspace.refresh()
        if doc is not None:
            self._callback = pn.state.add_periodic_callback(self.deliver, period=PERIOD_MS)
            doc.on_session_destroyed(lambda _context: self.close())

    def ref(self, obj: param.Parameterized, name: str) -> param.Parameter:
        """The reference a view binds to (`pn.bind`, `param.depends`) for `obj.name`."""
        key = (id(obj), name)
        with self._lock:
            entry = self._refs.get(key)
            if entry is None:
                delivered = _Delivered(value=getattr(obj, name))
                watcher = obj.param.watch(functools.partial(self._handle_change, key), [name])
                entry = self._refs[key] = (obj, delivered, watcher)
        return entry[1].param.value

    def _handle_change(self, key: _Key, _event: param.parameterized.Event) -> None:
        """Called on the thread that changed the core parameter."""
        if self._doc is None or pn.state.curdoc is self._doc:
            self._apply(key)
        else:
            with self._lock:
                self._pending.add(key)

    def _apply(self, key: _Key) -> None:
        entry = self._refs.get(key)
        if entry is not None:
            obj, delivered, _ = entry
            delivered.value = getattr(obj, key[1])  # the latest value, however many changes

    def deliver(self) -> None:
        """Read other processes' changes, then apply every pending change (session thread)."""
        workspace = self._workspace()
        try:
            if workspace is not None:
                workspace.refresh()
        except Exception:  # a busy or vanished database must not stop the session's updates
            log.exception("live state refresh failed")
        with self._lock:
            pending, self._pending = self._pending, set()
        for key in pending:
            self._apply(key)

    def close(self) -> None:
        """Stop delivering (the session ended): unwatch the core objects, stop the callback."""
        if self._callback is not None:
            self._callback.stop()
        with self._lock:
            refs, self._refs = self._refs, {}
        for obj, _, watcher in refs.values():
            obj.param.unwatch(watcher)
        with _feeds_lock:
            for key in [key for key, feed in _feeds.items() if feed is self]:
                del _feeds[key]


_feeds: dict[tuple[int, int], LiveFeed] = {}
_sessionless: weakref.WeakKeyDictionary[Workspace, LiveFeed] = weakref.WeakKeyDictionary()
_feeds_lock = threading.Lock()


def live(workspace: Workspace) -> LiveFeed:
    """The current session's feed of `workspace`, made on first use (one per session)."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        with _feeds_lock:
            feed = _sessionless.get(workspace)
            if feed is None:
                feed = _sessionless[workspace] = LiveFeed(workspace, None)
        return feed
    with _feeds_lock:
        feed = _feeds.get((id(doc), id(workspace)))
        if feed is None:
            feed = _feeds[(id(doc), id(workspace))] = LiveFeed(workspace, doc)
        return feed
