"""What every route of the server shares, whatever protocol it speaks: the models, their batchers, the metrics,
the generative models and their completions' records."""

from __future__ import annotations

from dataclasses import dataclass, field

from .batcher import Batcher
from .completion_records import CompletionRecords
from .config import ServerConfig
from .errors import NotFound
from .generation_metrics import GenerationMetrics
from .generative_model import GenerativeModel
from .metrics import Metrics
from .models import ServedModel


@dataclass
class ServerState:
    config: ServerConfig
    models: dict[str, ServedModel]
    batchers: dict[str, Batcher]
    metrics: Metrics
    ready: bool = False
    generative: dict[str, GenerativeModel] = field(default_factory=dict)  # text generation (/v1/chat/completions)
    generation_metrics: GenerationMetrics | None = None
    completions: CompletionRecords = field(default_factory=CompletionRecords)  # /debug/streams/{id}

    def model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name}'; this server serves: {', '.join(sorted(self.models))}")
        if version is not None and version != model.version:
            raise NotFound(f"model '{name}' has no version '{version}'; it serves version '{model.version}'")
        return model


__all__ = ["ServerState"]
