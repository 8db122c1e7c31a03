"""The views keep no live state of their own: no counters, copies or pollers (issue 10).

Param is the only live state: a view binds to the core's parameters through the one live
feed (`app/views/live.py`), which alone may schedule periodic work.
"""

from __future__ import annotations

import re
from pathlib import Path

VIEWS = Path(__file__).resolve().parent.parent / "app" / "views"
#: What a view-held copy of core state looks like: a revision/version counter parameter,
#: a poller, or a private copy of the last step or job progress.
HELD_STATE = re.compile(
    r"(version|revision|counter)\s*=\s*param\.Integer"
    r"|add_periodic_callback"
    r"|last_step\s*=\s*param\."
    r"|job_(done|total|status)\s*=\s*param\."
)


def test_no_view_but_the_live_feed_holds_counters_or_pollers() -> None:
    found = {
        f"{path.name}:{number}: {line.strip()}"
        for path in VIEWS.glob("*.py")
        if path.name != "live.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if HELD_STATE.search(line)
    }
    assert not found, found


def test_the_live_feed_is_the_one_poller() -> None:
    assert "add_periodic_callback" in (VIEWS / "live.py").read_text()
