"""The reward contracts: Vyper sources in ``contracts/`` (our own code, no library), compiled
with the pinned ``vyper`` package. ``scripts/compile-contracts`` writes each contract's ABI and
bytecode to ``chain/artifacts/<Name>.json`` for the default EVM version, so serving needs no
compiler run; a test proves the artifacts are what the sources compile to. Another EVM
version (a chain without Cancun, say) compiles from the sources at deploy time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["CONTRACTS", "DEFAULT_EVM", "Artifact", "artifact", "compile_source", "source_path"]

CONTRACTS = ("RewardToken", "MerkleDistributor")
DEFAULT_EVM = "cancun"
_ARTIFACTS = Path(__file__).parent / "artifacts"
_SOURCES = Path(__file__).resolve().parents[3] / "contracts"


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    """Deployment bytecode, 0x hex."""
    evm_version: str
    vyper: str
    source_sha256: str


def source_path(name: str) -> Path:
    if name not in CONTRACTS:
        raise ValueError(f"unknown contract {name!r}; one of {', '.join(CONTRACTS)}")
    return _SOURCES / f"{name}.vy"


def compile_source(name: str, source: str, evm_version: str = DEFAULT_EVM) -> Artifact:
    """Compile one contract's source with the installed vyper."""
    import vyper
    from vyper.compiler import compile_code
    from vyper.compiler.settings import Settings

    out = compile_code(
        source,
        contract_path=f"{name}.vy",
        output_formats=["abi", "bytecode"],
        settings=Settings(evm_version=evm_version),
    )
    return Artifact(
        name=name,
        abi=out["abi"],
        bytecode=out["bytecode"],
        evm_version=evm_version,
        vyper=str(vyper.__version__),
        source_sha256=hashlib.sha256(source.encode("utf-8")).hexdigest(),
    )


@cache
def artifact(name: str, evm_version: str = DEFAULT_EVM) -> Artifact:
    """The compiled contract: the stored artifact for the default EVM version, else a fresh
    compile of the source (which must then be on disk, as in a source checkout)."""
    if evm_version == DEFAULT_EVM:
        data = json.loads((_ARTIFACTS / f"{name}.json").read_text("utf-8"))
        return Artifact(**data)
    return compile_source(name, source_path(name).read_text("utf-8"), evm_version)


def write_artifacts() -> list[Path]:
    """(Re)write every stored artifact from the sources (``scripts/compile-contracts``)."""
    written = []
    _ARTIFACTS.mkdir(exist_ok=True)
    for name in CONTRACTS:
        built = compile_source(name, source_path(name).read_text("utf-8"))
        path = _ARTIFACTS / f"{name}.json"
        path.write_text(json.dumps(built.__dict__, indent=1) + "\n", encoding="utf-8")
        written.append(path)
    return written
