"""`POST /assemble/template` runs at most `assembly_slots` assemblies at once.

An assembly is CPU work under the GIL: on FastAPI's 40-thread default pool, concurrent
clients made every message cost more CPU (see `routers/assemble.assembly_slots`). The app
runs in process here (its own lifespan, real Piper, real files) so the test can watch how
many assemblies overlap; the requests are real ASGI requests through every middleware.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx

from hybrid_audio.api.app import create_app
from hybrid_audio.config import Settings
from tests.api_server import TINY_DATASETS, make_base_dir


class Overlap:
    """Wraps `Assembler.assemble`, counting the calls running at once."""

    def __init__(self, assemble) -> None:
        self.assemble, self.running, self.most = assemble, 0, 0
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)  # hold the slot long enough for every request to be waiting
            return self.assemble(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


async def _run(base: Path, piper) -> tuple[int, list[int], int]:
    app = create_app(Settings(base_dir=base), engine=piper)
    async with app.router.lifespan_context(app):
        workspace = app.state.workspace
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            made = await client.post(
                "/generate/combined", json={"name": "Ann", "developer": "Acme Homes"}
            )
            assert made.status_code == 200, made.text
            overlap = Overlap(workspace.assembler.assemble)
            workspace.assembler.assemble = overlap
            body = {"template": "double_anchor", "name": "Ann", "developer": "Acme Homes"}
            answers = await asyncio.gather(
                *(client.post("/assemble/template", json=body) for _ in range(12))
            )
            workspace.generator.workers = 5  # a network engine's parallel syntheses, say
            await client.post("/assemble/template", json=body)
            tokens = app.state.assembly_slots.total_tokens
    return overlap.most, [a.status_code for a in answers], tokens


def test_assemblies_run_at_most_a_slot_each_and_the_slots_follow_the_engine(
    tmp_path: Path, piper
) -> None:
    base = make_base_dir(tmp_path / "base", TINY_DATASETS)
    most, statuses, tokens = asyncio.run(_run(base, piper))
    cores = os.cpu_count() or 1
    assert statuses == [200] * 12
    assert most == min(cores, 12)  # never more at once, and not one at a time either
    assert tokens == max(cores, 5)
