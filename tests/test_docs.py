"""Documentation cannot fall behind: every setting and every endpoint is documented."""

from pathlib import Path

from fastapi import FastAPI

from loraloop.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [
        name
        for name in Settings.model_fields
        if f"`{name}`" not in text or f"`LORALOOP_{name.upper()}`" not in text
    ]
    assert not missing, f"document these settings in docs/configuration.md: {missing}"


def test_every_endpoint_has_a_summary_and_is_in_the_spec(app: FastAPI) -> None:
    spec = app.openapi()
    undocumented = [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if not operation.get("description")
    ]
    assert not undocumented, f"give these routes a docstring: {undocumented}"
