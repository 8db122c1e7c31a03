"""`models.model_response`: a route's pre-serialized model is the JSON FastAPI would send.

`POST /assemble/template` returns its validated `AssembleResponse` through it (no second
validation, no serialization hop); clients must see the very bytes `response_model` gave.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from hybrid_audio.api.models import model_response


class Inner(BaseModel):
    ratio: float
    names: list[str]


class Outer(BaseModel):
    id: str
    note: str | None = None
    inner: Inner
    sample_rate: int = Field(serialization_alias="sampleRate")


def _pair() -> TestClient:
    value = Outer(
        id="Søren “x”", inner=Inner(ratio=0.1 + 0.2, names=["José", "a\nb"]), sample_rate=1
    )
    app = FastAPI()

    @app.get("/by-fastapi", response_model=Outer)
    def by_fastapi() -> Outer:
        return value

    @app.get("/by-helper", response_model=Outer)
    def by_helper() -> object:
        return model_response(value)

    @app.post("/created", response_model=Outer, status_code=201)
    def created() -> object:
        return model_response(value, 201)

    return TestClient(app)


def test_model_response_sends_the_bytes_fastapi_sends() -> None:
    with _pair() as client:
        ours, theirs = client.get("/by-helper"), client.get("/by-fastapi")
    assert ours.status_code == theirs.status_code == 200
    assert ours.content == theirs.content
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    assert ours.json()["sampleRate"] == 1  # aliases, as response_model uses them


def test_model_response_keeps_a_status() -> None:
    with _pair() as client:
        response = client.post("/created")
    assert response.status_code == 201
    assert response.json()["inner"]["names"] == ["José", "a\nb"]
