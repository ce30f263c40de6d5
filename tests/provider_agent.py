"""A worker process for the provider tests: ``python -m tests.provider_agent MODE URL TOKEN
NAME WORKDIR``. ``honest`` runs the real agent; ``forge`` is a dishonest provider that trains
nothing and uploads random weights of the right shapes (a forged adapter that loads);
``copy`` evaluates, then reports each case's expected answer as its own, with the scores those
answers truly earn (only regenerating them can tell); ``once`` runs one job and exits."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from loraloop.ml import evaluation
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


class Copier(Agent):
    def deliver(self, job: dict[str, Any], token: str, result: dict[str, Any]) -> dict[str, Any]:
        cases = {c["id"]: c for s in job["payload"]["suites"] for c in s["cases"]}
        for per_suite in result["versions"].values():
            for scored in per_suite.values():
                for row in scored["cases"]:
                    case = cases[row["id"]]
                    said = case["expected"]
                    row["answer"] = said if isinstance(said, str) else " ".join(said)
                    row["score"] = evaluation.score(case["metric"], row["answer"], said)
                scored["score"] = sum(r["score"] for r in scored["cases"]) / len(scored["cases"])
        return result


def main() -> None:
    mode, url, token, name, workdir = sys.argv[1:6]
    logging.basicConfig(level=logging.INFO, format=f"{name} %(levelname)s %(message)s")
    kind = {"forge": Forger, "copy": Copier}.get(mode, Agent)
    agent = kind(
        url,
        token,
        name=name,
        workdir=Path(workdir),
        wait_seconds=2.0,
        once=mode in ("forge", "copy", "once"),
    )
    agent.run()


if __name__ == "__main__":
    main()
