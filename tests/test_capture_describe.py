"""A capture's description: its rate curve, burstiness, sizes and mix, measured on the reader's stream,
and the forecast and synthetic scenario fitted from it. Pure: hand-made requests, no servers."""

from __future__ import annotations

import json
import math
import tomllib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from loadtest.analysis.cost_inputs import load_forecast
from loadtest.config.scenario import scenario_from_dict
from loadtest.errors import ConfigError
from loadtest.replay.describe import (
    FIRST_BAD,
    MAX_LABELS,
    describe_capture,
    description_dict,
    description_lines,
    fit_scenario,
    forecast_toml,
)
from loadtest.replay.readers import BadLine, CapturedRequest
from loadtest.traffic.arrivals import arrival_times, expected_count
from loadtest.traffic.shapes import from_table

EPOCH = 1_764_511_387.0  # 2025-11-30, where the capture's clock starts


def captured(times, **fields):
    """A stream of requests at these offsets (seconds) from EPOCH."""
    for i, t in enumerate(times):
        yield CapturedRequest(
            line=i + 1, time=EPOCH + float(t), method="POST", path="/v2/models/minilm/infer", **fields
        )


def day_with_a_spike() -> list[int]:
    """Requests per second: a day compressed into 60 s (50/s at night, 200/s in the afternoon), and a
    500/s spike in seconds 40-42."""
    rates = [round(50 + 150 * (1 - math.cos(2 * math.pi * s / 60)) / 2) for s in range(60)]
    rates[40:43] = [500, 500, 500]
    return rates


def evenly(rates: list[int]) -> list[float]:
    """Each second's requests spread evenly across it."""
    return [s + j / n for s, n in enumerate(rates) for j in range(n)]


def poisson(rate, seconds: float, rng: np.random.Generator, peak: float) -> np.ndarray:
    """Poisson arrivals at ``rate(t)`` (at most ``peak``), by thinning a constant-rate process."""
    candidates = np.cumsum(rng.exponential(1 / peak, int(peak * seconds * 1.1)))
    candidates = candidates[candidates < seconds]
    return candidates[rng.random(len(candidates)) < rate(candidates) / peak]


def gamma_gaps(k: float, rate: float, n: int, seed: int) -> np.ndarray:
    """Arrival times whose gaps are gamma with shape ``k`` (CV 1/sqrt(k)) at a mean ``rate``."""
    return np.cumsum(np.random.default_rng(seed).gamma(k, 1 / (k * rate), n))


def fitted(text: str):
    return scenario_from_dict(tomllib.loads(text), "fitted.toml", Path("."))


# --- rate curve ---------------------------------------------------------------------------------


def test_a_compressed_day_with_a_spike_gives_its_count_mean_and_peak_to_mean():
    rates = day_with_a_spike()
    description = describe_capture(captured(evenly(rates)))
    known_mean = sum(rates) / len(rates)
    assert description.requests == sum(rates) == 8534
    assert list(description.counts) == rates
    assert description.span_s == 60 and description.start == EPOCH
    assert description.rate_mean == pytest.approx(known_mean, rel=1e-12)
    assert description.rate_peak == 500
    assert description.peak_to_mean == pytest.approx(500 / known_mean, rel=0.05)  # 3.52x


def test_a_coarser_resolution_counts_per_bucket_and_keeps_the_mean():
    description = describe_capture(captured(evenly(day_with_a_spike())), resolution=5.0)
    assert len(description.counts) == 12 and description.counts.sum() == 8534
    assert description.rate_mean == pytest.approx(8534 / 60)
    assert description.rate_peak == max(description.counts) / 5


def test_a_request_out_of_order_counts_in_its_bucket_with_a_zero_gap():
    description = describe_capture(captured([0.0, 1.0, 0.9, 2.0]))
    assert description.start == EPOCH and description.end == EPOCH + 2.0
    assert list(description.counts) == [2, 1, 1]
    # Gaps run from the latest time so far: 1, 0 (not -0.1), 1; their CV is sqrt(1/2).
    assert description.cv_interarrival == pytest.approx(math.sqrt(0.5))


# --- burstiness ---------------------------------------------------------------------------------


def test_poisson_arrivals_at_a_constant_rate_have_a_cv_of_one():
    rng = np.random.default_rng(11)
    description = describe_capture(captured(np.cumsum(rng.exponential(1 / 200, 40_000))))
    assert 0.9 <= description.cv_interarrival <= 1.1
    assert 0.9 <= description.cv_rescaled <= 1.1


def test_a_daily_cycle_inflates_the_raw_cv_but_the_rescaled_cv_stays_poisson():
    def day(t):
        return 20 + 380 * (1 - np.cos(2 * np.pi * t / 600)) / 2

    times = poisson(day, 600, np.random.default_rng(12), peak=400)
    description = describe_capture(captured(times))
    assert description.cv_interarrival > 1.1  # about 1.9: quiet and busy hours mix long and short gaps
    assert 0.9 <= description.cv_rescaled <= 1.15


def test_gamma_gaps_with_shape_a_quarter_have_a_cv_of_two():
    description = describe_capture(captured(gamma_gaps(0.25, 200, 40_000, seed=13)))
    assert description.cv_interarrival == pytest.approx(2.0, rel=0.1)
    assert description.cv_rescaled == pytest.approx(2.0, rel=0.1)


def test_evenly_spread_requests_are_regular_not_poisson():
    description = describe_capture(captured(evenly([100] * 20)))
    assert description.cv_rescaled < 0.05


# --- bad lines, sizes, mix, text ----------------------------------------------------------------


def test_bad_lines_are_counted_the_share_is_exact_and_the_first_hundred_kept_in_order():
    stream = []
    for i in range(1, 1001):
        stream.append(BadLine(i, f"not JSON ({i})") if i % 4 == 0 else next(captured([i / 100])))
    description = describe_capture(stream)
    assert (description.requests, description.bad_lines) == (750, 250)
    assert description.malformed_share == 0.25
    assert len(description.first_bad) == FIRST_BAD == 100
    assert description.first_bad[0] == (4, "not JSON (4)") and description.first_bad[-1] == (400, "not JSON (400)")
    assert description_dict(description)["first_bad"][1] == {"line": 8, "reason": "not JSON (8)"}


def small_capture() -> list[CapturedRequest]:
    """Ten requests of known classes, sizes and routes."""
    sizes = [100] * 5 + [200] * 3 + [1000, 5000]
    labels = ["short"] * 6 + ["long"] * 3 + [None]
    paths = ["/v2/models/minilm/infer?trace=1"] * 8 + ["/v1/embeddings"] * 2
    return [
        CapturedRequest(line=i + 1, time=EPOCH + i, method="post", path=path, body=b"x" * size, cls=cls, size=size)
        for i, (size, cls, path) in enumerate(zip(sizes, labels, paths, strict=True))
    ]


def test_class_route_mix_and_body_size_percentiles_of_a_small_capture():
    description = describe_capture(small_capture())
    assert description.classes == {"short": 6, "long": 3, "unlabelled": 1}
    assert description.routes == {"POST /v2/models/minilm/infer": 8, "POST /v1/embeddings": 2}
    assert description.sized_requests == 10
    assert (description.size_p50, description.size_max) == (100, 5000)
    assert description.size_p95 == pytest.approx(5000, rel=1e-3)
    assert description.size_p99 == pytest.approx(5000, rel=1e-3)
    assert description.size_mean == 7100 / 10


def test_requests_without_a_captured_body_are_left_out_of_the_sizes():
    description = describe_capture(captured([0, 1, 2]))  # an access log: no bodies
    assert description.sized_requests == 0 and description.size_p50 == 0 and description.size_mean == 0


def test_past_fifty_distinct_routes_the_rest_count_as_other():
    stream = [CapturedRequest(line=i, time=EPOCH + i, method="GET", path=f"/item/{i}") for i in range(80)]
    description = describe_capture(stream)
    assert len(description.routes) == MAX_LABELS + 1 and description.routes["other"] == 30
    assert sum(description.routes.values()) == 80


def oip(*texts: str) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}]}


def text_capture() -> list[CapturedRequest]:
    """OIP v2 bodies labelled short, OpenAI embeddings bodies labelled long, and one tensor body."""
    docs = [
        ("short", oip("one two")),  # 4 tokens
        ("short", oip("one two three", "a b c d e f")),  # 5 and 8
        ("long", {"input": "w " * 40}),  # 42
        ("long", {"model": "minilm", "input": ["w " * 30, "w " * 50]}),  # 32 and 52
        ("features", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[0.1, 0.2]]}]}),
    ]
    return [
        CapturedRequest(line=i + 1, time=EPOCH + i, method="POST", path="/", doc=doc, cls=cls)
        for i, (cls, doc) in enumerate(docs)
    ]


def test_text_lengths_per_class_from_oip_and_openai_bodies():
    description = describe_capture(text_capture())
    short, long = description.text_tokens["short"], description.text_tokens["long"]
    assert set(description.text_tokens) == {"short", "long"}  # the FP32 tensor holds no text
    assert (short.requests, short.texts, short.min, short.max) == (2, 3, 4, 8)
    assert (long.requests, long.texts, long.min, long.max) == (2, 3, 32, 52)
    assert (short.p5, short.p95) == (4, 8) and (long.p5, long.p95) == (32, 52)


def test_the_description_is_json_and_reads_in_a_few_lines():
    description = describe_capture([*text_capture(), BadLine(9, "truncated")], source="prod.jsonl")
    data = json.loads(json.dumps(description_dict(description)))
    assert data["requests"] == 5 and data["rate"]["counts"] == [1, 1, 1, 1, 1]
    assert data["text_tokens"]["long"]["max"] == 52
    lines = description_lines(description)
    assert lines[0].startswith("prod.jsonl: 5 requests over 5s") and "16.67% malformed" in lines[0]
    assert any(line.startswith("tokens per text, short") for line in lines)
    assert lines[-1] == "bad line 9: truncated"


# --- forecast -----------------------------------------------------------------------------------


def test_the_forecast_reads_back_through_loadtest_cost_with_the_same_numbers(tmp_path):
    description = describe_capture(captured(evenly(day_with_a_spike())), source="prod.jsonl")
    text = forecast_toml(description, growth=(1, 2.5, 10))
    assert text.startswith("# ") and "prod.jsonl" in text.splitlines()[0] and "1s resolution" in text
    path = tmp_path / "forecast.toml"
    path.write_text(text)
    forecast = load_forecast(str(path))
    assert forecast.mean_rps == description.rate_mean
    assert forecast.peak_factor == description.peak_to_mean
    assert forecast.growth == (1.0, 2.5, 10.0)


def test_an_empty_capture_has_nothing_to_forecast_from():
    with pytest.raises(ValueError, match="no readable requests"):
        forecast_toml(describe_capture([BadLine(1, "empty")]))


# --- fitted scenario ----------------------------------------------------------------------------


def test_the_fitted_scenario_follows_the_captures_rate_curve():
    rates = day_with_a_spike()
    description = describe_capture(captured(evenly(rates)), source="prod.jsonl")
    text = fit_scenario(description, "fitted")
    assert text.startswith("# Fitted to prod.jsonl: 8,534 requests") and "peak-to-mean 3.52" in text
    scenario = fitted(text)
    shape = scenario.load.shape
    assert scenario.name == "fitted" and scenario.load.model == "open" and shape.kind == "stages"
    assert scenario.load.duration == description.span_s == 60 and len(shape.stages) == 60
    assert expected_count(shape, scenario.load.duration) == pytest.approx(description.requests, rel=0.03)
    per_second = [shape.at(t) for t in range(61)]
    assert max(per_second) / np.mean(per_second) == pytest.approx(description.peak_to_mean, rel=0.10)
    assert scenario.target.protocol == "oip-v2" and scenario.target.model == "minilm"
    assert "no text bodies to size classes from" in text


def test_a_long_capture_is_fitted_in_at_most_max_stages_equal_stages():
    rates = [100 + 10 * min(s // 60, 9 - s // 60) for s in range(600)]  # up for five minutes, then down
    description = describe_capture(captured(evenly(rates)))
    scenario = fitted(fit_scenario(description, "long", max_stages=7))
    stages = scenario.load.shape.stages
    assert len(stages) == 7 and len({s.duration for s in stages}) == 1
    assert sum(s.duration for s in stages) == pytest.approx(600)
    assert expected_count(scenario.load.shape, 600) == pytest.approx(description.requests, rel=0.03)


def test_gamma_traffic_is_fitted_with_gamma_arrivals_of_its_burstiness():
    description = describe_capture(captured(gamma_gaps(0.25, 200, 12_000, seed=14)))
    scenario = fitted(fit_scenario(description, "bursty-fit"))
    shape = scenario.load.shape
    assert scenario.load.arrivals == "gamma"
    assert shape.burstiness == pytest.approx(0.25, rel=0.25)
    assert shape.burstiness == pytest.approx(1 / description.cv_rescaled**2, rel=1e-3)
    regenerated = np.fromiter(arrival_times(shape, scenario.load.duration, "gamma", seed=15), float)
    again = describe_capture(captured(regenerated))
    assert again.cv_rescaled == pytest.approx(description.cv_rescaled, rel=0.15)


def test_poisson_traffic_is_fitted_with_poisson_arrivals():
    rng = np.random.default_rng(16)
    description = describe_capture(captured(np.cumsum(rng.exponential(1 / 100, 6_000))))
    scenario = fitted(fit_scenario(description, "steady-fit"))
    assert scenario.load.arrivals == "poisson" and scenario.load.shape.burstiness == 1.0


def test_text_classes_become_the_fitted_payload_mix():
    scenario = fitted(fit_scenario(describe_capture(text_capture()), "text-fit"))
    classes = {c.name: c for c in scenario.payload.classes}
    assert scenario.payload.source == "text" and set(classes) == {"short", "long"}
    assert classes["short"].weight == classes["long"].weight == 50
    assert (classes["short"].min_tokens, classes["short"].max_tokens) == (4, 8)
    assert (classes["long"].min_tokens, classes["long"].max_tokens) == (32, 52)


BASE = """
name = "fraud"
[target]
profile = "fraud-fp32"
protocol = "oip-v2"
model = "fraud"
input_name = "features"
[payload]
source = "features"
width = 30
[load]
shape = { kind = "constant", value = 5 }
duration = "10s"
"""


def test_without_text_bodies_the_base_scenarios_target_and_payload_are_kept():
    text = fit_scenario(describe_capture(captured(evenly([20] * 10))), "fraud-fit", base_toml=BASE)
    scenario = fitted(text)
    assert (scenario.target.model, scenario.target.input_name, scenario.target.profile) == (
        "fraud",
        "features",
        "fraud-fp32",
    )
    assert scenario.payload.source == "features" and scenario.payload.width == 30
    assert scenario.load.duration == 10  # the capture's span, not the base's
    assert "no text bodies to size classes from" in text


ODD_BASE = """
[target]
protocol = "oip-v2"
model = "fraud"
headers = { "x-api key" = "a \\"quoted\\" value", "tab\\there" = "\\u007f" }
[payload]
source = "features"
width = 8
extra = { "nested.key" = [1, 2.5, "three"] }
"""


def test_the_written_toml_reads_back_as_the_same_data_whatever_the_names_hold():
    # A capture's name goes into comments, the base's keys and strings into tables: a line break in
    # the name must not end its comment, and the quotes, dots, tabs and DEL must come back as they were.
    source = 'prod\n[load]\r\x00"x".jsonl'
    description = describe_capture(captured(evenly([20] * 10)), source=source)
    text = fit_scenario(description, 'odd\tname "fit"', base_toml=ODD_BASE)
    doc = tomllib.loads(text)
    base = tomllib.loads(ODD_BASE)
    assert doc["name"] == 'odd\tname "fit"' and source in doc["description"]
    assert doc["target"] == base["target"] and doc["payload"] == base["payload"]
    assert set(doc) == {"name", "description", "target", "payload", "load"}  # the comments stayed comments
    shape = doc["load"]["shape"]
    assert doc["load"]["duration"] == description.span_s and len(shape["stages"]) == 10
    assert [s["target"] for s in shape["stages"]] == [20.0] * 10
    forecast = tomllib.loads(forecast_toml(description))
    assert forecast == {"forecast": {"mean_rps": 20.0, "peak_factor": 1.0, "growth": [1.0, 10.0, 100.0]}}


# --- the stages shape takes a burstiness --------------------------------------------------------


def test_stages_take_a_burstiness_and_then_draw_gamma_arrivals():
    table = {"kind": "stages", "burstiness": 0.5, "stages": [{"duration": "10s", "target": 100}]}
    assert from_table(table, 10, "test.toml").burstiness == 0.5
    assert from_table({"kind": "stages", "stages": table["stages"]}, 10, "test.toml").burstiness == 1.0
    with pytest.raises(ConfigError, match="load.shape.burstiness: must be more than 0"):
        from_table({**table, "burstiness": 0}, 10, "test.toml")

    def scenario(**load):
        return scenario_from_dict({"load": {"shape": table, "duration": "10s", **load}}, "test.toml", Path("."))

    assert scenario().load.arrivals == "gamma" and scenario(arrivals="gamma").load.shape.burstiness == 0.5
    with pytest.raises(ConfigError, match="load.arrivals: a stages shape with burstiness 0.5 draws gamma"):
        scenario(arrivals="poisson")


# --- memory -------------------------------------------------------------------------------------


def test_profiling_two_hundred_thousand_requests_holds_none_of_them():
    def stream():
        doc = oip("a short text to size")
        for i in range(200_000):
            yield CapturedRequest(
                line=i + 1, time=EPOCH + i / 1000, method="POST", path="/v2/models/minilm/infer", doc=doc, size=64
            )

    tracemalloc.start()
    try:
        description = describe_capture(stream())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert description.requests == 200_000 and len(description.counts) == 200
    assert peak < 3 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # 200k requests held would be well over 50 MiB


def test_unlabelled_text_is_fitted_as_length_bands_that_keep_the_capture_skew():
    # 70% of texts about 8 tokens, 25% about 60, 5% about 200: one p5-p95 range would draw them uniformly.
    lengths = [6] * 700 + [58] * 250 + [198] * 50
    items = [
        CapturedRequest(i + 1, 1000.0 + i / 100, "POST", "/v1/embeddings", doc={"input": " ".join(["w"] * n)})
        for i, n in enumerate(lengths)
    ]
    text = fit_scenario(describe_capture(items), "bands")
    classes = tomllib.loads(text)["payload"]["classes"]
    assert [c["name"] for c in classes] == ["short", "medium", "long"]
    assert [c["weight"] for c in classes] == [50, 40, 10]
    assert classes[0]["max_tokens"] == 8 and classes[1]["min_tokens"] == 9 and classes[2]["max_tokens"] == 200
    # A capture of one length has one band, with the whole share.
    same = [CapturedRequest(i + 1, 1000.0 + i, "POST", "/v1/embeddings", doc={"input": "a b c"}) for i in range(50)]
    one = tomllib.loads(fit_scenario(describe_capture(same), "one"))["payload"]["classes"]
    assert one == [{"name": "short", "weight": 100, "min_tokens": 5, "max_tokens": 5}]
