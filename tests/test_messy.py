"""Messy traffic's pure parts: the kinds, their bodies, the verdicts, the picks, the configuration."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from pathlib import Path

import orjson
import pytest

from loadtest.config.scenario import scenario_from_dict
from loadtest.engine.runconfig import messy_bodies
from loadtest.errors import ConfigError
from loadtest.messy.custom import read_custom
from loadtest.messy.kinds import (
    ACCEPT,
    CORRECT,
    DEFECT,
    EITHER,
    KINDS,
    REJECT,
    WRONG,
    RequestForm,
    build,
    build_all,
    kinds_for,
)
from loadtest.messy.picks import MessyPool
from loadtest.messy.verdicts import summarise, verdict

FORMS = {
    "oip text": RequestForm(),
    "oip features": RequestForm(model="fraud", input_name="features", source="features"),
    "openai": RequestForm(protocol="openai-embeddings"),
    "template": RequestForm(protocol="http-json", template='{"query": "{{text}}", "k": 5}'),
    "template features": RequestForm(protocol="http-json", source="features"),
}


@pytest.mark.parametrize("name", FORMS)
def test_the_same_seed_gives_the_same_bytes_for_every_kind(name):
    form = FORMS[name]
    kinds = kinds_for(form)
    first, again, other = build_all(kinds, form, 11), build_all(kinds, form, 11), build_all(kinds, form, 12)
    assert first == again
    # Most kinds draw words, numbers or cut points from the seed: another seed changes their bytes.
    changed = [k for k in kinds if [r.body for r in first[k]] != [r.body for r in other[k]]]
    assert len(changed) >= len(kinds) - 3, sorted(set(kinds) - set(changed))


def _parses(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize("name", FORMS)
def test_each_kind_is_what_its_name_says(name):
    form = FORMS[name]
    bodies = {k: build(k, form, 3).body for k in kinds_for(form)}
    for kind in ("invalid_json", "truncated_body"):
        assert not _parses(bodies[kind]), kind
    for kind in ("missing_input", "null_value", "nested_value", "wrong_datatype", "duplicate"):
        assert _parses(bodies[kind]), kind
    assert len(bodies["oversized"]) > form.oversized_bytes and _parses(bodies["oversized"])
    if form.source == "text":
        text_of = {k: bodies[k] for k in ("empty_string", "one_character", "whitespace_only", "mixed_scripts", "emoji")}
        assert all(_parses(b) for b in text_of.values())
        with pytest.raises(UnicodeDecodeError):
            bodies["invalid_utf8"].decode("utf-8")
        assert len(bodies["beyond_token_limit"].split()) > 4000
        assert "\\u0000" in bodies["control_characters"].decode() or "\\u0007" in bodies["control_characters"].decode()
    else:
        assert b"NaN" in bodies["nan_infinity"] and not _parses(bodies["nan_infinity"])
        assert b"1e+300" in bodies["huge_values"]
    if "wrong_content_type" in bodies:
        assert build("wrong_content_type", form, 3).content_type == "text/plain"
    assert build("duplicate", form, 3).twin


def test_oip_kinds_break_exactly_one_rule_of_the_protocol():
    form = FORMS["oip text"]
    clean = json.loads(build("duplicate", form, 1).body)["inputs"][0]
    assert set(clean) == {"name", "datatype", "shape", "data"} and clean["datatype"] == "BYTES"
    assert json.loads(build("missing_input", form, 1).body) == {"inputs": []}
    extra = json.loads(build("extra_input", form, 1).body)["inputs"]
    assert [i["name"] for i in extra] == ["text", "unexpected_input"]
    wrong = json.loads(build("wrong_datatype", form, 1).body)["inputs"][0]
    assert wrong["datatype"] == "FP32" and all(isinstance(x, float) for x in wrong["data"])
    mismatch = json.loads(build("shape_mismatch", form, 1).body)["inputs"][0]
    assert mismatch["shape"] == [3] and len(mismatch["data"]) == 2
    assert json.loads(build("large_batch", form, 1).body)["inputs"][0]["shape"] == [256]
    assert json.loads(build("empty_string", form, 1).body)["inputs"][0]["data"] == [""]


def test_kinds_fit_the_protocol_and_payload():
    assert "shape_mismatch" in kinds_for(FORMS["oip text"]) and "shape_mismatch" not in kinds_for(FORMS["openai"])
    assert "nan_infinity" in kinds_for(FORMS["oip features"]) and "nan_infinity" not in kinds_for(FORMS["oip text"])
    assert "empty_string" not in kinds_for(FORMS["oip features"])
    only_grpc = {"not_protobuf", "unknown_model"}  # the model is in a gRPC message, in an HTTP request's path
    generative = {"broken_messages", "wrong_role", "max_tokens_zero", "max_tokens_huge", "past_context", "hang_up"}
    assert set(kinds_for(FORMS["oip text"])) | set(kinds_for(FORMS["oip features"])) == set(KINDS) - {
        "unknown_field",
        *only_grpc,
        *generative,
    }
    assert {KINDS[k].expect for k in KINDS} == {REJECT, ACCEPT, EITHER}
    chat, completions = RequestForm(protocol="openai-chat"), RequestForm(protocol="openai-completions")
    assert generative <= set(kinds_for(chat)) and "null_value" not in kinds_for(chat)
    assert generative - {"broken_messages", "wrong_role"} <= set(kinds_for(completions))
    assert "shape_mismatch" not in kinds_for(chat) and "large_batch" not in kinds_for(completions)


def test_chat_kinds_are_requests_a_generative_server_reads_and_judges():
    form = RequestForm(protocol="openai-chat", model="smollm2")
    hang_up = build("hang_up", form, 1)
    assert hang_up.hang_up and hang_up.expect == ACCEPT and orjson.loads(hang_up.body)["stream"] is True
    assert orjson.loads(build("max_tokens_zero", form, 1).body)["max_tokens"] == 0
    assert orjson.loads(build("max_tokens_huge", form, 1).body)["max_tokens"] == 10**9
    assert len(orjson.loads(build("past_context", form, 1).body)["messages"][0]["content"].split()) == 40_000
    role = orjson.loads(build("wrong_role", form, 1).body)["messages"][0]["role"]
    assert role not in ("system", "user", "assistant", "tool")
    clean = orjson.loads(build("emoji", form, 1).body)
    assert clean["model"] == "smollm2" and clean["stream"] is True and clean["messages"][0]["role"] == "user"
    assert build("beyond_token_limit", form, 1).expect == EITHER  # within a large model's context
    prompt = orjson.loads(build("one_character", RequestForm(protocol="openai-completions", stream=False), 1).body)
    assert set(prompt) == {"model", "prompt", "max_tokens"} and len(prompt["prompt"]) == 1


@pytest.mark.parametrize(
    "expect,outcome,found",
    [
        (REJECT, "http_400", CORRECT),
        (REJECT, "http_413", CORRECT),
        (REJECT, "", WRONG),  # a 200 for garbage
        (ACCEPT, "", CORRECT),
        (ACCEPT, "http_400", WRONG),  # a 4xx for valid edge text
        (ACCEPT, "invalid_body", WRONG),  # a 200 whose body is no answer
        (EITHER, "", CORRECT),
        (EITHER, "http_422", CORRECT),
        (EITHER, "http_302", WRONG),
        (REJECT, "http_500", DEFECT),
        (ACCEPT, "http_503", DEFECT),
        (EITHER, "timeout", DEFECT),
        (REJECT, "connection", DEFECT),
        (ACCEPT, "RemoteProtocolError", DEFECT),
    ],
)
def test_every_answer_gets_one_verdict(expect, outcome, found):
    assert verdict(expect, outcome) == found


def _pool(share: float, weights: dict[str, float] | None = None, seed: int = 5) -> MessyPool:
    form = FORMS["oip text"]
    kinds = kinds_for(form)
    return MessyPool(build_all(kinds, form, seed), weights or {k: 1.0 for k in kinds}, share, seed)


def test_the_messy_share_holds_exactly_and_every_kind_comes_within_one_cycle():
    pool = _pool(0.05)
    picks = [pool.pick(i) for i in range(20_000)]
    messy = [p for p in picks if p is not None]
    assert len(messy) == 1000  # 5% of 20,000, exactly
    kinds = len(kinds_for(FORMS["oip text"]))
    assert len({p.kind for p in messy[:kinds]}) == kinds  # one cycle: every kind once
    assert set(Counter(p.kind for p in messy).values()) == {1000 // kinds}
    again, other = _pool(0.05), _pool(0.05, seed=6)
    assert picks[:500] == [again.pick(i) for i in range(500)]  # same seed, same picks
    assert [p is None for p in picks[:400]] != [other.pick(i) is None for i in range(400)]
    never = _pool(0.0)  # built once: a pool builds all its bodies up front
    assert all(never.pick(i) is None for i in range(1000))


def test_weights_set_the_mix_of_kinds():
    pool = _pool(0.5, {"invalid_json": 3.0, "empty_string": 1.0})
    counts = Counter(p.kind for p in (pool.pick(i) for i in range(8000)) if p is not None)
    assert counts == {"invalid_json": 3000, "empty_string": 1000}


def test_custom_kinds_come_from_jsonl_with_their_expected_outcome(tmp_path):
    path = tmp_path / "kinds.jsonl"
    path.write_text(
        '{"kind": "sql_injection", "expect": "reject", "body": {"inputs": "1; DROP TABLE users"}}\n'
        '{"kind": "raw_bytes", "expect": "either", "body_base64": "AAEC", "content_type": "application/octet-stream"}\n'
    )
    kinds = read_custom(path)
    assert kinds["sql_injection"][0].expect == REJECT and kinds["raw_bytes"][0].body == b"\x00\x01\x02"
    assert kinds["raw_bytes"][0].content_type == "application/octet-stream"
    for text, message in [
        ('{"kind": "x", "expect": "maybe", "body": 1}', "kinds.jsonl:1: expect: must be one of"),
        ('{"kind": "invalid_json", "body": 1}', "is a built-in kind"),
        ('{"kind": "x"}', "needs 'body'"),
        ("not json", "kinds.jsonl:1: not valid JSON"),
    ]:
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=message):
            read_custom(path)


def _scenario(messy: str, tmp_path: Path = Path(".")):
    text = f'name = "m"\n[load]\nduration = "1s"\n[messy]\n{messy}\n'
    return scenario_from_dict(tomllib.loads(text), "m.toml", tmp_path)


def test_a_messy_table_is_checked_up_front_naming_the_key():
    assert _scenario('share = "5%"').messy.share == pytest.approx(0.05)
    assert _scenario("share = 0.03\nkinds = { invalid_json = 2 }").messy.kinds == (("invalid_json", 2.0),)
    assert _scenario("share = 0.03").gates == ("messy_defects == 0",)
    assert _scenario("share = 0.03\ngate = false").gates == ()
    for text, message in [
        ('share = "lots"', "m.toml: messy.share: expected a share like 5% or 0.05"),
        ("share = 2", "messy.share: must be between 0 and 100%"),
        ('share = 0.1\nkinds = ["nope"]', "messy.kinds: unknown kind 'nope'"),
        ("share = 0.1\nkinds = { invalid_json = -1 }", "messy.kinds.invalid_json: a weight must be a number"),
        ("share = 0.1\nspeed = 3", "messy.speed: unknown key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _scenario(text)
    with pytest.raises(ConfigError, match="'nan_infinity' does not apply to oip-v2 with text payloads"):
        messy_bodies(_scenario('share = 0.1\nkinds = ["nan_infinity"]'))


def test_the_summary_counts_verdicts_by_kind():
    verdicts = {
        "messy:invalid_json": {"correct:reject:http_400": 4, "defect:reject:http_500": 1},
        "messy:empty_string": {"wrong:accept:http_400": 2},
    }
    summary = summarise(verdicts, {"messy:invalid_json": 5, "messy:empty_string": 2, "messy:emoji": 1, "short": 90})
    assert summary["requests"] == 8 and (summary["correct"], summary["wrong"], summary["defects"]) == (4, 2, 1)
    invalid = summary["kinds"]["invalid_json"]
    assert invalid["answers"] == {"http_400": 4, "http_500": 1} and invalid["expect"] == REJECT
    assert summary["kinds"]["emoji"]["scheduled"] == 1 and summary["kinds"]["emoji"]["correct"] == 0
