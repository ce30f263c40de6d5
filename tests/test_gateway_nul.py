"""A byte-level model can emit a NUL byte. No database text keeps one and request bodies refuse
it, so the answer reaches the caller (streamed or whole) with U+FFFD in its place, exactly as
its trace keeps it, and a playground that saves the answer back is not refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from loraloop.api.app import create_app
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.testing import StubEngine
from tests.factories import make_base_model, make_deployment, make_key, make_user


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings, db, engine_factory=lambda path: StubEngine(answer="a\x00b"))


@pytest.mark.parametrize("stream", [False, True])
def test_a_nul_in_the_answer_arrives_as_a_replacement_character(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path, stream: bool
) -> None:
    user = make_user(db)
    make_deployment(
        db, user, settings, name="plain", base_model_id=make_base_model(db, tmp_path / "b").id
    )
    auth = {"Authorization": f"Bearer {make_key(db, user)}"}
    body = {"model": "plain", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    response = client.post("/v1/chat/completions", headers=auth, json=body)
    assert response.status_code == 200, response.text
    if stream:
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    else:
        text = response.json()["choices"][0]["message"]["content"]
    assert text == "a\ufffdb"
    manage = {"Authorization": f"Bearer {make_key(db, user, scopes=['manage'])}"}
    saved = client.post(
        "/api/playground/conversations",
        headers=manage,
        json={"title": "t", "messages": [{"role": "assistant", "content": text}]},
    )
    assert saved.status_code == 201, saved.text
