"""Documentation cannot fall behind: every setting and every endpoint is documented."""

import difflib
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from loraloop.api import reference
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


# --- the documentation site -------------------------------------------------------------------

REFERENCE = ROOT / "docs" / "reference" / "api.md"


def test_every_endpoint_is_in_the_api_reference(app: FastAPI) -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    missing = [
        f"{method} {path}"
        for method, path in reference.operations(app)
        if f"### `{method} {path}`" not in text
    ]
    assert not missing, f"run scripts/api-reference; docs/reference/api.md lacks {missing}"


def test_the_committed_api_reference_is_fresh() -> None:
    fresh = reference.generate()
    committed = REFERENCE.read_text(encoding="utf-8")
    if committed != fresh:
        diff = difflib.unified_diff(
            committed.splitlines(), fresh.splitlines(), "committed", "generated", lineterm=""
        )
        shown = "\n".join(itertools.islice(diff, 40))
        pytest.fail(f"docs/reference/api.md is stale; run scripts/api-reference\n{shown}")


def _nav_pages(entries: object) -> Iterator[str]:
    """The Markdown files named anywhere in an mkdocs ``nav``."""
    if isinstance(entries, str):
        yield entries
    elif isinstance(entries, list):
        for entry in entries:
            yield from _nav_pages(entry)
    elif isinstance(entries, dict):
        for value in entries.values():
            yield from _nav_pages(value)


def test_every_page_in_docs_is_in_the_site_nav() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev extras (mkdocs)")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = set(_nav_pages(config["nav"]))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert not pages - listed, f"add these pages to the nav in mkdocs.yml: {sorted(pages - listed)}"
    assert not listed - pages, f"the nav names pages that do not exist: {sorted(listed - pages)}"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    for module in ("mkdocs", "material"):
        pytest.importorskip(module, reason=f"{module} comes with the dev extras (.[dev])")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stderr[-4000:]}"
    assert (tmp_path / "reference" / "api" / "index.html").is_file()
    assert (tmp_path / "quickstart" / "index.html").is_file()
