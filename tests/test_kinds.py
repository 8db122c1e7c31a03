"""A stem kind added as data: `intro`, through the real API server, the CLI and a template.

An operator adds a kind by writing `data/kinds.json` and its dataset file, plus (if a message
should use it) a template with `{"slot": "intro"}`; no code changes. The server (a
subprocess, real Piper) then lists it in `GET /kinds` and `/external/datasets`, makes its
stems, files them under `stems/intro/`, assembles a template that uses it, and the CLI
(`hybrid-audio`, a subprocess) lists its stems. The kinds file is checked as the server
starts: one that redefines a kind or escapes the data folder stops the start, naming the file.
Kinds that register in *this* process would stay for the session, so everything that adds
one runs in the server; the in-process tests below only check refusals (which add nothing).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybrid_audio import kinds
from hybrid_audio.config import Settings
from hybrid_audio.kinds import KindsError
from tests.api_server import NO_FAILURE_LIMIT, ApiServer, make_base_dir, start_server
from tests.test_cli import ok, one_line_error
from tests.test_cli import run as run_cli

INTRO_KIND = {"name": "intro", "plural": "intros", "dataset": "intros.txt"}
#: An added kind that is also a rotation stream.
GREETING_KIND = {
    "name": "greeting",
    "plural": "greetings",
    "dataset": "greetings.txt",
    "rotation": True,
}
GREETINGS = ("Hello", "Good evening", "Hi there")
INTRO_TEMPLATE = {
    "description": "<intro> <name>, <developer> has a new offer for you.",
    "segments": [
        {"slot": "intro"},
        {"slot": "name"},
        {"silence_ms": 120},
        {"slot": "developer"},
        {"stem": "stem.script.offer"},
    ],
    "gap_ms": 40,
}


@pytest.fixture(scope="module")
def intro_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A keyed server whose data folder adds the `intro` kind and a template using it, and
    the `greeting` kind as a rotation stream."""
    base = make_base_dir(
        tmp_path_factory.mktemp("kinds"),
        {
            "kinds.json": json.dumps({"kinds": [INTRO_KIND, GREETING_KIND]}),
            "intros.txt": "Welcome back\nGood morning\n",
            "greetings.txt": "".join(f"{g}\n" for g in GREETINGS),
        },
    )
    (base / "templates" / "intro_offer.json").write_text(json.dumps(INTRO_TEMPLATE))
    with start_server(base, key="kinds-test-key", env=NO_FAILURE_LIMIT) as server:
        yield server


@pytest.fixture(scope="module")
def client(intro_server: ApiServer) -> httpx.Client:
    return intro_server.client(timeout=120)


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_kinds_route_lists_the_added_kind_with_its_dataset(client: httpx.Client) -> None:
    """Clients (the CLI) learn kinds from the server, datasets named relative to the base."""
    listed = {k["name"]: k for k in _ok(client.get("/kinds"))}
    assert list(listed) == ["name", "developer", "script", "intro", "greeting"]
    assert listed["intro"] == {
        "name": "intro",
        "plural": "intros",
        "aliases": [],
        "form": "lines",
        "dataset": "data/intros.txt",
        "rotation": False,
    }
    assert listed["script"]["form"] == "mapping"
    assert listed["name"]["dataset"] == "data/common_names.txt"


def test_kinds_route_is_behind_the_key(intro_server: ApiServer) -> None:
    """The discovery route tells nothing to a client without the key."""
    assert intro_server.client(key="").get("/kinds").status_code == 401


def test_datasets_list_and_show_the_added_kind(client: httpx.Client) -> None:
    """Adding a kind never turns /external/datasets into a 500."""
    infos = {d["kind"]: d for d in _ok(client.get("/external/datasets"))}
    assert set(infos) == {"name", "developer", "script", "intro", "greeting"}
    assert (infos["intro"]["count"], infos["intro"]["path"]) == (2, "data/intros.txt")
    items = _ok(client.get("/external/datasets/intro"))["items"]
    assert [(i["text"], i["stem_id"]) for i in items] == [
        ("Welcome back", "stem.intro.welcome_back"),
        ("Good morning", "stem.intro.good_morning"),
    ]


def test_upload_replaces_the_added_kinds_dataset(
    client: httpx.Client, intro_server: ApiServer
) -> None:
    """The upload route takes any known kind and writes that kind's own file."""
    files = {"file": ("intros.csv", b"intro\nWelcome back\nHello there\n")}
    info = _ok(client.post("/external/datasets/intro", files=files))
    assert (info["count"], info["path"]) == (2, "data/intros.txt")
    on_disk = (intro_server.base_dir / "data" / "intros.txt").read_text()
    assert on_disk == "Welcome back\nHello there\n"


def test_unknown_kind_is_a_422_naming_the_known_ones(client: httpx.Client) -> None:
    """A kind that is in no kinds file is refused at the edge, listing the real ones."""
    for response in (
        client.get("/external/datasets/outro"),
        client.post("/generate/stem", json={"kind": "outro", "text": "Bye"}),
        client.get("/cache/list", params={"kind": "outro"}),
    ):
        error = response.json()["error"]
        assert response.status_code == 422, response.text
        assert "unknown kind 'outro'" in error["message"]
        assert "intro" in error["message"]


def test_generate_an_intro_stem_and_list_it(client: httpx.Client, intro_server: ApiServer) -> None:
    """The stem of an added kind is made by the engine and filed under its own folder."""
    stem = _ok(client.post("/generate/stem", json={"kind": "intro", "text": "Welcome back"}))
    assert stem["stem"]["stem_id"] == "stem.intro.welcome_back"
    assert stem["stem"]["kind"] == "intro"
    assert (intro_server.base_dir / "stems" / "intro" / "stem.intro.welcome_back.wav").is_file()
    listed = _ok(client.get("/cache/list", params={"kind": "intro"}))
    assert "stem.intro.welcome_back" in {s["stem_id"] for s in listed}
    assert {s["kind"] for s in listed} == {"intro"}


def test_generate_stem_takes_a_mapping_kinds_key(client: httpx.Client) -> None:
    """For a mapping kind (script) the text is the key; its phrase is what is spoken."""
    stem = _ok(client.post("/generate/stem", json={"kind": "script", "text": "offer"}))["stem"]
    assert stem["stem_id"] == "stem.script.offer"
    assert stem["text"] == "has a new offer for you"
    missing = client.post("/generate/stem", json={"kind": "script", "text": "no-such-key"})
    assert missing.status_code == 404
    assert "unknown script key" in missing.json()["error"]["message"]


def test_template_with_an_intro_slot_assembles_and_verifies(client: httpx.Client) -> None:
    """A template names the new kind as a slot; a request fills it through `slots`."""
    body = {
        "template": "intro_offer",
        "name": "Ann",
        "developer": "Acme Homes",
        "slots": {"intro": "Good morning"},
    }
    result = _ok(client.post("/assemble/template", json=body))
    assert result["verified"] is True
    manifest = _ok(client.get(f"/assemble/outputs/{result['id']}"))
    assert manifest["inputs"]["intro"] == "Good morning"
    stems = [s["stem_id"] for s in manifest["sources"] if s["kind"] == "stem"]
    assert stems == [
        "stem.intro.good_morning",
        "stem.name.ann",
        "stem.developer.acme_homes",
        "stem.script.offer",
    ]


def test_template_slot_of_the_added_kind_must_be_filled(client: httpx.Client) -> None:
    """A message without its intro is refused, naming the slot, not assembled half-way."""
    body = {"template": "intro_offer", "name": "Ann", "developer": "Acme Homes"}
    response = client.post("/assemble/template", json=body)
    assert response.status_code == 422
    assert "needs: intro" in response.json()["error"]["message"]
    both = {**body, "slots": {"intro": "Hi", "name": "Bob"}}
    response = client.post("/assemble/template", json=both)
    assert response.status_code == 422
    assert "top-level" in response.json()["error"]["message"]


def test_an_added_kind_is_a_rotation_stream_only_when_it_says_so(client: httpx.Client) -> None:
    """`rotation: false` (the default) keeps the kind out of the rotation's streams."""
    response = client.post("/rotation/reset", json={"stream": "intro"})
    assert response.status_code == 422
    assert "unknown stream 'intro'" in response.json()["error"]["message"]
    response = client.get("/rotation/next/intro")
    assert response.status_code == 422
    assert "greeting" in response.json()["error"]["message"]
    assert list(_ok(client.get("/rotation/state"))) == [
        "name",
        "developer",
        "script",
        "greeting",
        "pair",
    ]


def test_an_added_rotation_kind_is_stepped_through_the_api_and_the_cli(
    client: httpx.Client, intro_server: ApiServer, tmp_path: Path
) -> None:
    """`rotation: true` makes the kind a stream that `GET /rotation/next/{stream}` and
    `hybrid-audio rotation next STREAM` step, sharing one cursor: a cycle gives every
    greeting once."""
    _ok(client.post("/rotation/reset", json={"stream": "greeting"}))
    steps = [_ok(client.get("/rotation/next/greeting")) for _ in range(2)]
    cli = functools.partial(run_cli, tmp_path, intro_server.base_url, key=intro_server.key)
    steps.append(json.loads(ok(cli("--json", "rotation", "next", "greeting"))))
    assert [s["stream"] for s in steps] == ["greeting"] * 3
    assert [(s["cycle"], s["position"], s["size"]) for s in steps] == [
        (0, 0, 3),
        (0, 1, 3),
        (0, 2, 3),
    ]
    assert sorted(s["item"] for s in steps) == sorted(GREETINGS)
    state = _ok(client.get("/rotation/state"))["greeting"]
    assert (state["cycle"], state["position"]) == (1, 0)
    shown = ok(cli("rotation", "next", "greeting"))
    assert shown.startswith("greeting: ")
    assert "cycle 1, position 0/3" in shown


def test_the_cli_refuses_a_stream_the_server_does_not_have(
    client: httpx.Client, intro_server: ApiServer, tmp_path: Path
) -> None:
    """A kind without `rotation: true` is no stream: exit 2 naming the server's streams,
    and no stream moves."""
    before = _ok(client.get("/rotation/state"))
    result = run_cli(
        tmp_path, intro_server.base_url, "rotation", "next", "intro", key=intro_server.key
    )
    error = one_line_error(result, 2)
    assert "unknown stream 'intro'" in error
    assert "greeting" in error
    assert _ok(client.get("/rotation/state")) == before


def test_cli_generates_a_stem_of_the_added_kind(
    client: httpx.Client, intro_server: ApiServer, tmp_path: Path
) -> None:
    """`hybrid-audio generate stem intro …` makes the stem the API lists; the plural, in
    any case, names the same kind and finds it cached."""
    cli = functools.partial(run_cli, tmp_path, intro_server.base_url, key=intro_server.key)
    made = json.loads(ok(cli("--json", "generate", "stem", "intro", "Nice to see you")))["stem"]
    assert (made["stem_id"], made["kind"], made["cached"]) == (
        "stem.intro.nice_to_see_you",
        "intro",
        False,
    )
    listed = _ok(client.get("/cache/list", params={"kind": "intro"}))
    assert "stem.intro.nice_to_see_you" in {s["stem_id"] for s in listed}
    again = ok(cli("generate", "stem", "Intros", "Nice to see you"))
    assert "stem.intro.nice_to_see_you" in again
    assert "(cached," in again


# --- the kinds file: refusals ---------------------------------------------------------------


def _settings_with(tmp_path: Path, document: object) -> Settings:
    settings = Settings(base_dir=tmp_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    raw = document if isinstance(document, str) else json.dumps(document)
    (settings.data_dir / "kinds.json").write_text(raw)
    return settings


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"kinds": [{"name": "name", "plural": "names", "dataset": "other.txt"}]}, "defined"),
        ({"kinds": [{"name": "pair", "plural": "pairs", "dataset": "p.txt"}]}, "reserved"),
        ({"kinds": [{"name": "lead", "plural": "names", "dataset": "l.txt"}]}, "both"),
        ({"kinds": [{"name": "leak", "plural": "leaks", "dataset": "../../x.txt"}]}, "inside"),
        (
            {"kinds": [{"name": "faq", "plural": "faqs", "form": "mapping", "dataset": "f.txt"}]},
            "csv",
        ),
        ({"kinds": [{"name": "tag", "plural": "tags", "setting": "scripts_file"}]}, "setting"),
        ({"kinds": [{"name": "Caps", "plural": "capses", "dataset": "c.txt"}]}, "pattern"),
        ({"kinds": [{"name": "outro", "plural": "outros", "datset": "o.txt"}]}, "datset"),
        ('{"kinds": [', "kinds.json"),
    ],
)
def test_a_bad_kinds_file_is_refused_and_adds_nothing(
    tmp_path: Path, document: object, fragment: str
) -> None:
    """A careless kinds.json never half-registers, never redefines a kind, never leaves data/."""
    before = kinds.kinds()
    with pytest.raises(KindsError, match=r"kinds\.json") as refused:
        kinds.load(_settings_with(tmp_path, document))
    assert fragment in str(refused.value)
    assert kinds.kinds() == before


def test_server_with_a_bad_kinds_file_does_not_start(tmp_path: Path) -> None:
    """The operator learns of a broken kinds file when starting, not from a later 500."""
    base = make_base_dir(
        tmp_path / "base",
        {
            "kinds.json": json.dumps(
                {"kinds": [{"name": "script", "plural": "scripts", "dataset": "scripts.txt"}]}
            )
        },
    )
    with pytest.raises(RuntimeError, match=r"kinds\.json: kind 'script' is already defined"):
        start_server(base, key="k", timeout=30)
