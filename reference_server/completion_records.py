"""The server's own record of each completion it served, by the ``id`` its answer carried (``GET /debug/streams/{id}``;
``GET /debug/streams`` lists them all, oldest first).

A load test measures a stream from the client's side; this is the other side, to set beside it:
when the request arrived, when each token was chosen (``time.perf_counter_ns()``: CLOCK_MONOTONIC,
the same clock as a client's ``perf_counter`` on this host), how many tokens the prompt and the
completion held, and why it ended. The difference between a token's time here and its arrival at
the client is the time it spent in the server's event loop, the network and the client.

Only the last ``limit`` records are kept (1,024): memory stays bounded whatever the traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

LIMIT = 1024


@dataclass
class CompletionRecord:
    id: str
    model: str
    endpoint: str  # "chat" or "completions"
    stream: bool
    received_ns: int  # when the request reached the handler
    prompt_tokens: int = 0
    token_times_ns: list[int] = field(default_factory=list)  # when each completion token was chosen
    # When each content chunk of a stream was handed to the connection: a token's text may wait for the next
    # token (a UTF-8 character split across tokens, a possible stop string), so this is what a client can see.
    emit_times_ns: list[int] = field(default_factory=list)
    text: str = ""  # what the client was sent
    finish_reason: str | None = None  # None while generating; "cancelled" when the client left
    finished_ns: int | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_times_ns)

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "model": self.model,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "clock": "perf_counter_ns",
            "received_ns": self.received_ns,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "token_times_ns": self.token_times_ns,
            "emit_times_ns": self.emit_times_ns,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "finished_ns": self.finished_ns,
        }


class CompletionRecords:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._records: OrderedDict[str, CompletionRecord] = OrderedDict()

    def add(self, record: CompletionRecord) -> None:
        self._records[record.id] = record
        while len(self._records) > self.limit:
            self._records.popitem(last=False)

    def get(self, id_: str) -> CompletionRecord | None:
        return self._records.get(id_)

    def all(self) -> list[CompletionRecord]:
        """Every record kept, oldest first."""
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)


__all__ = ["CompletionRecord", "CompletionRecords", "LIMIT"]
