"""OpenAI's chat and text completion requests, checked field by field into one typed request (pure).

Every field a request may carry is checked for its type and range, and a refusal names the field
and what it got, as OpenAI's and vLLM's 400s do. What this server cannot do (several choices,
log probabilities, tools, penalties, echo) is refused rather than silently ignored, so a load test
never measures something other than it asked for; fields neither API defines are ignored, as
vLLM ignores them. The defaults are vLLM's: ``max_tokens`` 16 for ``/v1/completions``, the rest
of the context for chat; greedy unless ``temperature`` is above 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .errors import BadRequest
from .protocol import json_type

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP_STRINGS = 4
COMPLETIONS_MAX_TOKENS = 16  # vLLM's (and OpenAI's legacy) default for /v1/completions
SEED_RANGE = (-(2**63), 2**64)


@dataclass(frozen=True)
class CompletionRequest:
    endpoint: Literal["chat", "completions"]
    model: str | None
    messages: tuple[dict[str, str], ...] = ()  # chat: {"role", "content"} with content as one string
    prompt: str | tuple[int, ...] = ""  # completions: text, or token ids
    max_tokens: int | None = None  # None: the rest of the context
    min_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False


def parse_chat(doc: object) -> CompletionRequest:
    """A ``POST /v1/chat/completions`` body, parsed from JSON."""
    doc = _object(doc)
    messages = tuple(_message(i, m) for i, m in enumerate(_list(doc, "messages")))
    if not messages:
        raise BadRequest("'messages' must hold at least one message")
    _refuse_unsupported(doc, chat=True)
    max_tokens = _max_tokens(doc, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _max_tokens(doc, "max_tokens")
    return CompletionRequest("chat", _model(doc), messages=messages, max_tokens=max_tokens, **_sampling(doc))


def parse_completion(doc: object) -> CompletionRequest:
    """A ``POST /v1/completions`` body, parsed from JSON."""
    doc = _object(doc)
    prompt = _prompt(doc.get("prompt"))
    _refuse_unsupported(doc, chat=False)
    max_tokens = _max_tokens(doc, "max_tokens")
    if "max_tokens" not in doc:
        max_tokens = COMPLETIONS_MAX_TOKENS
    return CompletionRequest("completions", _model(doc), prompt=prompt, max_tokens=max_tokens, **_sampling(doc))


def _object(doc: object) -> dict:
    if not isinstance(doc, dict):
        raise BadRequest(f"request body must be a JSON object, got {json_type(doc)}")
    return doc


def _model(doc: dict) -> str | None:
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest(f"'model' must be a string, got {json_type(model)}")
    return model or None


def _list(doc: dict, name: str) -> list:
    if name not in doc:
        raise BadRequest(f"'{name}' is required")
    value = doc[name]
    if not isinstance(value, list):
        raise BadRequest(f"'{name}' must be a list, got {json_type(value)}")
    return value


def _message(index: int, message: object) -> dict[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise BadRequest(f"{where} must be an object with 'role' and 'content', got {json_type(message)}")
    role = message.get("role")
    if not isinstance(role, str):
        raise BadRequest(f"{where}.role must be a string, got {json_type(role)}")
    if role not in ROLES:
        raise BadRequest(f"{where}.role must be one of {', '.join(ROLES)}; got {role[:40]!r}")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string, got {json_type(name)}")
    if message.get("tool_calls"):
        raise BadRequest(f"{where}.tool_calls: this server does not support tools")
    role = "system" if role == "developer" else role  # OpenAI's newer name for it; ChatML knows "system"
    return {"role": role, "content": _content(where, message.get("content", _MISSING))}


_MISSING = object()


def _content(where: str, content: object) -> str:
    """A message's content: a string, or a list of text parts (OpenAI's ``[{"type": "text", "text": ...}]``)."""
    if content is _MISSING:
        raise BadRequest(f"{where}.content is required")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or a list of text parts, got {json_type(content)}")
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            shown = repr(kind)[:40] if isinstance(kind, str) else json_type(part)
            raise BadRequest(f"{where}.content[{i}] must be a text part ({{'type': 'text', 'text': ...}}), got {shown}")
        text = part.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{where}.content[{i}].text must be a string, got {json_type(text)}")
        texts.append(text)
    return "\n".join(texts)


def _prompt(prompt: object) -> str | tuple[int, ...]:
    """A string, token ids, or either as a list of one (more prompts to a request are not supported)."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        if len(prompt) != 1:
            raise BadRequest(f"'prompt' holds {len(prompt)} prompts; this server takes one a request")
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(type(t) is int for t in prompt):
        return tuple(prompt)
    if prompt is None:
        raise BadRequest("'prompt' is required")
    raise BadRequest(f"'prompt' must be a string or a list of token ids, got {json_type(prompt)}")


def _max_tokens(doc: dict, name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    return _integer(name, value, minimum=1)


def _integer(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    if type(value) is not int:
        raise BadRequest(f"'{name}' must be an integer, got {json_type(value)}")
    if minimum is not None and value < minimum:
        raise BadRequest(f"'{name}' must be at least {minimum}, got {value}")
    if maximum is not None and value >= maximum:
        raise BadRequest(f"'{name}' must be below {maximum}, got {value}")
    return value


def _number(name: str, value: object, low: float, high: float, low_open: bool = False) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a number, got {json_type(value) if type(value) is not float else value}")
    if value > high or value < low or (low_open and value == low):
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        raise BadRequest(f"'{name}' must be {bound} and at most {high:g}, got {value}")
    return float(value)


def _boolean(doc: dict, name: str) -> bool:
    value = doc.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be a boolean, got {json_type(value)}")
    return value


def _sampling(doc: dict) -> dict:
    """The fields both endpoints share: sampling, stopping and streaming."""
    fields: dict = {}
    if (value := doc.get("temperature")) is not None:
        fields["temperature"] = _number("temperature", value, 0.0, 2.0)
    if (value := doc.get("top_p")) is not None:
        fields["top_p"] = _number("top_p", value, 0.0, 1.0, low_open=True)
    if (value := doc.get("top_k")) is not None:
        top_k = _integer("top_k", value, minimum=-1)
        fields["top_k"] = max(top_k, 0)  # -1 and 0: no limit (vLLM's)
    if (value := doc.get("seed")) is not None:
        fields["seed"] = _integer("seed", value, *SEED_RANGE) % 2**64
    if (value := doc.get("min_tokens")) is not None:
        fields["min_tokens"] = _integer("min_tokens", value, minimum=0)
    fields["ignore_eos"] = _boolean(doc, "ignore_eos")
    fields["stop"] = _stop(doc.get("stop"))
    fields["stream"] = _boolean(doc, "stream")
    fields["include_usage"] = _stream_options(doc.get("stream_options"), fields["stream"])
    return fields


def _stop(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadRequest(f"'stop' must be a string or a list of strings, got {json_type(stop)}")
    if len(stop) > MAX_STOP_STRINGS:
        raise BadRequest(f"'stop' holds {len(stop)} strings; at most {MAX_STOP_STRINGS} are accepted")
    return tuple(stop)


def _stream_options(options: object, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise BadRequest("'stream_options' may be set only when 'stream' is true")
    if not isinstance(options, dict):
        raise BadRequest(f"'stream_options' must be an object, got {json_type(options)}")
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise BadRequest(f"'stream_options.include_usage' must be a boolean, got {json_type(include)}")
    return bool(include)


# field: the values that ask for nothing this server would do differently
_NEUTRAL = {
    "n": (None, 1),
    "best_of": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0),
    "logit_bias": (None,),
    "tools": (None,),
    "functions": (None,),
    "tool_choice": (None, "none"),
}


def _refuse_unsupported(doc: dict, chat: bool) -> None:
    for name, neutral in _NEUTRAL.items():
        if name not in doc:
            continue
        value = doc[name]
        if name in ("logit_bias", "tools", "functions") and value in ({}, []):
            continue
        if not any(value == n and type(value) is type(n) for n in neutral):
            shown = value if isinstance(value, (bool, int, float)) else json_type(value)
            raise BadRequest(
                f"'{name}' = {shown} is not supported by this server (it generates one choice, greedy or sampled, "
                "with no log probabilities, tools or penalties)"
            )
    response_format = doc.get("response_format")
    if chat and response_format is not None and response_format != {"type": "text"}:
        raise BadRequest("'response_format' other than {'type': 'text'} is not supported by this server")


__all__ = ["CompletionRequest", "parse_chat", "parse_completion"]
