"""What every route of the server shares, whatever protocol it speaks: the models, their batchers, the metrics."""

from __future__ import annotations

from dataclasses import dataclass

from .batcher import Batcher
from .config import ServerConfig
from .errors import NotFound
from .metrics import Metrics
from .models import ServedModel


@dataclass
class ServerState:
    config: ServerConfig
    models: dict[str, ServedModel]
    batchers: dict[str, Batcher]
    metrics: Metrics
    ready: bool = False

    def model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name}'; this server serves: {', '.join(sorted(self.models))}")
        if version is not None and version != model.version:
            raise NotFound(f"model '{name}' has no version '{version}'; it serves version '{model.version}'")
        return model


__all__ = ["ServerState"]
