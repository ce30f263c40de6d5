"""A worker process for the provider tests: ``python -m tests.provider_agent MODE URL TOKEN
NAME WORKDIR``. ``honest`` runs the real agent; ``forge`` is a dishonest provider that trains
nothing and uploads random weights of the right shapes (a forged adapter that loads);
``once`` runs one job and exits."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from loraloop.worker.agent import Agent


class Forger(Agent):
    def prepare(self, job, folder, token):  # type: ignore[no-untyped-def]
        payload = super().prepare(job, folder, token)
        return {**payload, "spec": {**payload["spec"], "max_steps": 1}}  # skip the work

    def before_upload(self, folder: Path) -> None:
        path = folder / "adapter_model.safetensors"
        weights = load_file(str(path))
        generator = torch.Generator().manual_seed(1)
        forged = {k: torch.randn(v.shape, generator=generator) * 0.5 for k, v in weights.items()}
        save_file(forged, str(path))


def main() -> None:
    mode, url, token, name, workdir = sys.argv[1:6]
    logging.basicConfig(level=logging.INFO, format=f"{name} %(levelname)s %(message)s")
    kind = Forger if mode == "forge" else Agent
    agent = kind(
        url,
        token,
        name=name,
        workdir=Path(workdir),
        wait_seconds=2.0,
        once=mode in ("forge", "once"),
    )
    agent.run()


if __name__ == "__main__":
    main()
