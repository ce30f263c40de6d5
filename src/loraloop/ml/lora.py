"""LoRA settings and target-module presets (PEFT does the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from loraloop.errors import InvalidRequest

__all__ = ["PRESETS", "LoraSettings"]

Targets = Literal["attention", "all-linear"]

#: preset -> PEFT ``target_modules``; "all-linear" is PEFT's own keyword.
PRESETS: dict[str, str | list[str]] = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": "all-linear",
}


@dataclass(frozen=True)
class LoraSettings:
    """The adapter's shape. Defaults suit small models and small datasets."""

    rank: int = 16
    """Rank r of the update matrices (1–256)."""
    alpha: int = 32
    """Scaling numerator: the update is scaled by alpha / rank."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training (0–0.5)."""
    targets: Targets = "attention"
    """Which linear layers get adapters: attention projections, or every linear layer."""

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.rank <= 256:
            problems.append(f"lora rank {self.rank} must be 1 to 256")
        if not 1 <= self.alpha <= 1024:
            problems.append(f"lora alpha {self.alpha} must be 1 to 1024")
        if not 0 <= self.dropout <= 0.5:
            problems.append(f"lora dropout {self.dropout} must be 0 to 0.5")
        if self.targets not in PRESETS:
            problems.append(f"lora targets {self.targets!r} must be one of {', '.join(PRESETS)}")
        if problems:
            raise InvalidRequest("; ".join(problems), param="lora")

    def peft_config(self) -> Any:
        from peft import LoraConfig, TaskType

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=PRESETS[self.targets],
            task_type=TaskType.CAUSAL_LM,
            bias="none",
        )
