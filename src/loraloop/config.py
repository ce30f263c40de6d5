"""Settings: the one place that reads the environment (``LORALOOP_*``) and the config file.

Precedence, highest first: keyword arguments, ``LORALOOP_*`` environment variables,
the TOML file named by ``LORALOOP_CONFIG`` (or ``<home>/loraloop.toml``), defaults.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from loraloop.errors import ConfigurationError

__all__ = ["DEFAULT_SECRET", "Environment", "Registration", "Settings", "is_loopback"]

#: The secret every copy of the source knows; accepted only in development mode.
DEFAULT_SECRET = "loraloop-development-secret-change-me"  # noqa: S105


class Environment(StrEnum):
    development = "development"
    production = "production"


class Registration(StrEnum):
    open = "open"
    invite = "invite"
    closed = "closed"


#: A dotted module path, as ``importlib.import_module`` takes it.
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _config_file() -> Path | None:
    explicit = os.environ.get("LORALOOP_CONFIG")
    if explicit:
        return Path(explicit)
    home = Path(os.environ.get("LORALOOP_HOME", "./data"))
    candidate = home / "loraloop.toml"
    return candidate if candidate.is_file() else None


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything an operator can set. Each field is documented in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="LORALOOP_", extra="forbid", frozen=True)

    env: Environment = Environment.production
    """``development`` relaxes the secret and bind checks; never use it on a shared host."""

    home: Path = Path("./data")
    """Data folder: database, artifacts, converted base models, the generated secret key."""

    database_url: str = ""
    """SQLAlchemy URL; empty means SQLite at ``<home>/loraloop.db``."""

    host: str = "127.0.0.1"
    """Address the web server binds to."""

    port: int = Field(default=8000, ge=1, le=65535)
    """Port the web server binds to."""

    secret_key: SecretStr = SecretStr("")
    """Server secret shared by all replicas; empty: generated once into ``<home>/secret.key``."""

    registration: Registration = Registration.open
    """Who may create an account: anyone (open), holders of an invite code, or nobody."""

    allow_public_signup: bool = False
    """Allow open registration while bound beyond loopback (a public community server)."""

    secure_cookies: bool = False
    """Mark cookies ``Secure``; turn on when users reach loraloop over HTTPS (or a TLS proxy)."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body accepted outside upload endpoints."""

    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    """Largest dataset upload, checked while the file streams in."""

    max_adapter_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    """Largest adapter archive upload (``POST /api/adapters/import``), and the most that one
    archive may unpack to."""

    hub_endpoint: str = Field(default="https://huggingface.co", pattern=r"^https?://[^\s]+$")
    """The Hugging Face Hub (or a mirror of it) that adapters are imported from and pushed to."""

    hub_cache: Path | None = None
    """Where adapters downloaded from the hub are cached; unset: ``<home>/hub``."""

    hub_offline: bool = False
    """Never contact the hub: imports are served from ``hub_cache`` alone (an air-gapped server
    whose cache was filled elsewhere)."""

    session_days: int = Field(default=14, ge=1, le=365)
    """How long a sign-in session lives without activity."""

    login_max_failures: int = Field(default=5, ge=1)
    """Failed sign-ins per email address within ``login_window_minutes`` before a pause."""

    login_window_minutes: int = Field(default=15, ge=1)
    """Window over which failed sign-ins are counted."""

    job_lease_seconds: int = Field(default=60, ge=5)
    """How long a claimed job stays leased without a heartbeat."""

    job_max_attempts: int = Field(default=3, ge=1, le=100)
    """Default number of attempts before a job is marked failed."""

    default_max_tokens: int = Field(default=512, ge=1, le=32768)
    """Completion tokens a request may use when it names no ``max_tokens`` (capped by the
    context window); this is what a token budget reserves for such a request."""

    engine_device: str = "auto"
    """Where the inference engine runs: ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""

    engine_max_batch: int = Field(default=16, ge=1, le=256)
    """Sequences decoded together in one step (continuous batching); more wait in a queue."""

    engine_max_models: int = Field(default=2, ge=1, le=16)
    """Base models kept loaded at once; the least recently used idle one makes room."""

    engine_adapter_cache_mb: int = Field(default=512, ge=1)
    """Memory for adapters held by the engine (least recently used ones are dropped)."""

    engine_max_context: int | None = Field(default=None, ge=64)
    """Cap on prompt + completion tokens per request (default: the base model's context)."""

    upstream_timeout_seconds: float = Field(default=120.0, gt=0)
    """How long an external upstream deployment may take to answer."""

    trace_retention_days: int = Field(default=30, ge=1, le=3650)
    """Traces (request, answer, latency) older than this are deleted."""

    usage_retention_days: int = Field(default=90, ge=1, le=3650)
    """Per-request usage rows older than this are deleted; daily totals are kept."""

    log_format: Literal["text", "json"] = "text"
    """``text``: one readable line per record; ``json``: one JSON object per line (time, level,
    logger, message, request_id and extra fields) for a log collector."""

    metrics_token: SecretStr = SecretStr("")
    """A bearer token that may read ``/metrics`` (give it to Prometheus); empty: only an
    admin's API key may. Never logged."""

    egress_allow_private: bool = False
    """Let upstreams (external deployments, app members) point at loopback, private or
    link-local addresses. Off: nobody can make the server call its own network."""

    maintenance_interval_seconds: float = Field(default=30.0, gt=0)
    """How often the maintenance loop looks for due drift checks, triggers and canaries."""

    drift_window: int = Field(default=100, ge=10, le=5000)
    """Requests per drift check: the newest ones of a deployment."""

    drift_every: int = Field(default=50, ge=1, le=5000)
    """A deployment is checked again after this many new requests."""

    drift_alpha: float = Field(default=0.001, gt=0, lt=0.5)
    """Significance of each drift test; small, because checks repeat all day."""

    eval_max_new_tokens: int = Field(default=64, ge=1, le=4096)
    """Longest answer an evaluation case may get."""

    judge_base_url: str | None = None
    """An OpenAI-compatible ``/v1`` URL whose model judges challenger against champion answers
    pairwise (this platform's own ``/v1`` works too); unset: no judge. Its key is read by the
    worker from ``LORALOOP_JUDGE_API_KEY``."""

    judge_model: str | None = None
    """The model name to ask at ``judge_base_url``."""

    public_url: str | None = None
    """The URL people reach this server at (``https://loraloop.example``): wallet sign-in
    messages must name its host. Unset: the host the request came to."""

    chain_id: int = Field(default=131277322940537, ge=1)
    """The EVM chain rewards are paid on; wallet sign-in messages must name it (the default is
    the embedded chain's)."""

    chain_rpc: str | None = None
    """A JSON-RPC endpoint of a real EVM node (``http://127.0.0.1:8545``); unset: the embedded
    chain, in memory in this process, rebuilt from the transaction journal on every start."""

    chain_key: SecretStr = SecretStr("")
    """The platform's signer key (hex) on ``chain_rpc``; it deploys, publishes, relays claims
    and pays their gas. Read from ``LORALOOP_CHAIN_KEY``; never logged."""

    chain_key_file: Path | None = None
    """A file holding the signer key instead. Unset, with no key, on the embedded chain: one
    is generated into ``<home>/chain.key``."""

    chain_evm_version: str = "cancun"
    """The EVM version the contracts are compiled for (an older chain may need ``shanghai``)."""

    chain_token: str | None = None
    """Use an existing RewardToken at this address on ``chain_rpc`` (with ``chain_distributor``);
    unset: deployed once on first use and remembered."""

    chain_distributor: str | None = None
    """The MerkleDistributor that goes with ``chain_token``."""

    reward_epoch_days: float = Field(default=7.0, gt=0)
    """Length of one reward epoch; at its end the epoch closes and its root is published."""

    reward_pool: int = Field(default=1000, ge=0)
    """Whole tokens paid out per epoch (18 decimals), shared by the points earned in it."""

    reward_compute_share: float = Field(default=0.3, ge=0, le=1)
    """Share of the pool for verified compute; the rest goes to contributions, reviews and
    impact. A side with no points in an epoch is not minted."""

    reward_token_name: str = "loraloop reward"  # noqa: S105 - a name, not a secret
    reward_token_symbol: str = "LOOP"  # noqa: S105
    reward_token_cap: int = Field(default=0, ge=0)
    """Most whole tokens that may ever be minted; 0: no cap."""

    review_k: int = Field(default=3, ge=1, le=15)
    """Reviewers drawn for each community contribution."""

    review_max: int = Field(default=7, ge=1, le=31)
    """Most reviewers one contribution may have; without a quorum by then it is rejected."""

    review_quorum: float = Field(default=0.66, gt=0.5, le=1.0)
    """Share of the revealed vote weight one side needs to decide a contribution."""

    review_commit_hours: float = Field(default=48.0, gt=0)
    """A drawn reviewer who has not committed a verdict by then is replaced."""

    review_reveal_hours: float = Field(default=24.0, gt=0)
    """Time to reveal a committed verdict once every reviewer of the item has committed."""

    contributions_per_hour: int = Field(default=30, ge=1, le=10000)
    """Contributions one user may offer per hour, over all adapters."""

    near_duplicate_cosine: float = Field(default=0.95, gt=0, le=1.0)
    """MiniLM cosine similarity from which a contribution is refused as a near-duplicate."""

    plugins: Annotated[tuple[str, ...], NoDecode] = ()
    """Modules to load as plugins (``my_company.loraloop_formats``), besides installed packages
    that declare a ``loraloop.plugins`` entry point. ``LORALOOP_PLUGINS`` takes a comma list
    or a JSON list."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            if not path.is_file():
                raise ConfigurationError(f"config file {path} (LORALOOP_CONFIG) does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugin_list(cls, value: object) -> object:
        """A comma list or a JSON list from the environment; a list as it is from TOML."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("plugins")
    @classmethod
    def _plugin_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _MODULE.fullmatch(name)]
        if bad:
            raise ValueError(
                f"plugins must be importable module paths (such as my_package.plugin); "
                f"not {', '.join(repr(name) for name in bad)}"
            )
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        if self.env == Environment.development:
            return self
        problems = []
        if self.secret_key.get_secret_value() == DEFAULT_SECRET:
            problems.append(
                "LORALOOP_SECRET_KEY is the published development default; set a random value "
                "(or leave it empty to generate one in the data folder)"
            )
        if (
            not is_loopback(self.host)
            and self.registration == Registration.open
            and not self.allow_public_signup
        ):
            problems.append(
                f"LORALOOP_HOST={self.host} is reachable from other machines while anyone may "
                "sign up; set LORALOOP_REGISTRATION=invite or closed, set "
                "LORALOOP_ALLOW_PUBLIC_SIGNUP=true on purpose, or bind to 127.0.0.1"
            )
        if problems:
            raise ConfigurationError("refusing unsafe settings: " + "; ".join(problems))
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'loraloop.db').resolve()}"

    def secret(self) -> str:
        """The secret key, generating and storing one in the data folder on first use."""
        value = self.secret_key.get_secret_value()
        if value:
            return value
        return self.generated_secret("secret.key", lambda: secrets.token_urlsafe(48))

    def generated_secret(self, name: str, make: Callable[[], str]) -> str:
        """The secret in ``<home>/<name>``, written once by ``make`` (readable by the owner
        only) when the file does not exist yet."""
        path = self.home / name
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(make())
        return path.read_text().strip()
