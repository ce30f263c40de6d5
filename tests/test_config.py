from pathlib import Path

import pytest

from loraloop.config import DEFAULT_SECRET, Settings, is_loopback
from loraloop.errors import ConfigurationError

REFUSED = [
    ("default secret in production", {"secret_key": DEFAULT_SECRET}, "published development"),
    ("open sign-up on all interfaces", {"host": "0.0.0.0"}, "LORALOOP_REGISTRATION"),
    ("open sign-up on a LAN address", {"host": "192.168.1.5"}, "LORALOOP_REGISTRATION"),
]


@pytest.mark.parametrize(("name", "overrides", "needle"), REFUSED, ids=[c[0] for c in REFUSED])
def test_production_refuses_unsafe_settings(
    name: str, overrides: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        Settings(env="production", **overrides)


ALLOWED = [
    {"env": "development", "secret_key": DEFAULT_SECRET, "host": "0.0.0.0"},
    {"host": "0.0.0.0", "registration": "invite"},
    {"host": "0.0.0.0", "registration": "closed"},
    {"host": "0.0.0.0", "allow_public_signup": True},
    {"host": "::1"},
]


@pytest.mark.parametrize("overrides", ALLOWED)
def test_safe_settings_are_accepted(overrides: dict[str, object]) -> None:
    Settings(**overrides)  # type: ignore[arg-type]


def test_environment_variables_and_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "loraloop.toml"
    config.write_text('port = 9123\nregistration = "invite"\nhost = "127.0.0.1"\n')
    monkeypatch.setenv("LORALOOP_CONFIG", str(config))
    monkeypatch.setenv("LORALOOP_PORT", "9200")  # the environment wins over the file
    settings = Settings()
    assert settings.port == 9200
    assert settings.registration == "invite"


def test_missing_config_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORALOOP_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigurationError, match=r"nope\.toml"):
        Settings()


def test_unknown_setting_in_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "loraloop.toml"
    config.write_text("prot = 1\n")
    monkeypatch.setenv("LORALOOP_CONFIG", str(config))
    with pytest.raises(ValueError, match="prot"):
        Settings()


def test_default_database_is_sqlite_in_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/loraloop.db"


def test_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    first = settings.secret()
    assert len(first) >= 48
    assert settings.secret() == first
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


def test_secret_never_shows_in_repr() -> None:
    settings = Settings(secret_key="super-secret-value-123")
    assert "super-secret-value-123" not in repr(settings)
    assert "super-secret-value-123" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
