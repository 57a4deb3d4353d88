"""Output agreement: how far a variant's answers move, between variants and with batch composition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from loadtest.analysis.agreement import agreement, embedding_agreement, label_agreement, metric_for, nearest_neighbours
from loadtest.commands.agreement import measure_agreement
from loadtest.engine.model_outputs import batch_rows, collect_sequential, output_rows
from loadtest.errors import ConfigError, RunError
from loadtest.traffic.payloads import Payload
from loadtest.traffic.protocols import make_protocol

ROOT = Path(__file__).resolve().parents[1]
STEADY = ROOT / "scenarios" / "steady.toml"

FRAUD_SCENARIO = """
name = "fraud-agreement"
seed = 7

[target]
profile = "fraud-fp32"
protocol = "oip-v2"
model = "fraud"
input_name = "features"

[payload]
source = "features"
width = 8

[load]
duration = "10s"
"""

# Four 2-d vectors; B moves only the second, from (0.8, 0.6) to (0.6, 0.8): cosine 0.96 for it, and
# its nearest neighbour changes from input 0 (cosine 0.8) to input 2 (cosine 0.8 under B, 0.6 under A).
A = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
B = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])


# --- metrics on hand-made arrays ---------------------------------------------------------------


def test_identical_embeddings_agree_completely():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16))
    result = embedding_agreement(x, x.copy())
    assert result["cosine_mean"] == pytest.approx(1.0)
    assert result["cosine_min"] == pytest.approx(1.0)
    assert result["cosine_p1"] == pytest.approx(1.0)
    assert result["nn_agreement"] == 1.0
    assert result["n"] == 50


def test_cosine_ignores_scale():
    assert embedding_agreement(A, 3.0 * A)["cosine_min"] == pytest.approx(1.0)


def test_one_moved_vector_lowers_its_cosine_and_changes_its_nearest_neighbour():
    assert nearest_neighbours(A).tolist() == [1, 0, 1, 2]
    assert nearest_neighbours(B).tolist() == [1, 2, 1, 2]
    result = embedding_agreement(A, B)
    assert result["cosine_min"] == pytest.approx(0.96)
    assert result["cosine_min_index"] == 1
    assert result["cosine_mean"] == pytest.approx((3 + 0.96) / 4)
    assert result["cosine_p1"] == pytest.approx(0.96 + 0.03 * 0.04)  # numpy's linear interpolation
    assert result["nn_agreement"] == 0.75


def test_answers_for_the_wrong_inputs_are_caught():
    """A variant that returns the right vectors in the wrong order does not agree."""
    shuffled = A[[3, 2, 1, 0]]
    result = embedding_agreement(A, shuffled)
    assert result["cosine_min"] == pytest.approx(-1.0)
    assert result["nn_agreement"] < 1.0


def test_embedding_agreement_refuses_outputs_of_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        embedding_agreement(A, A[:3])


def test_classifier_top1_agreement_and_largest_score_difference():
    a = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.1, 0.9]])
    b = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    result = label_agreement(a, b)
    assert result["top1_agreement"] == 0.75
    assert result["disagreements"] == 1
    assert result["max_abs_diff"] == pytest.approx(0.2)


def test_a_single_score_column_is_thresholded_at_one_half():
    a = np.array([[0.2], [0.7], [0.49]])
    b = np.array([[0.3], [0.4], [0.51]])
    result = label_agreement(a, b)
    assert result["top1_agreement"] == pytest.approx(1 / 3)
    assert result["max_abs_diff"] == pytest.approx(0.3)


def test_the_metric_follows_the_model_kind_or_else_the_output_shape():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7]])
    embeddings = np.random.default_rng(1).normal(size=(4, 384))
    assert metric_for("text-embedding", probabilities) == "embedding"
    assert metric_for("tabular-classifier", embeddings) == "label"
    assert metric_for(None, probabilities) == "label"
    assert metric_for(None, np.array([[0.2], [0.9]])) == "label"
    assert metric_for(None, embeddings) == "embedding"
    assert agreement(probabilities, probabilities)["metric"] == "label"
    assert agreement(embeddings, embeddings)["metric"] == "embedding"


# --- reading answers ---------------------------------------------------------------------------


def test_output_rows_read_oip_and_openai_answers():
    oip = orjson.dumps({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]})
    assert output_rows("oip-v2", oip).tolist() == [[0.25, 0.75]]
    openai = orjson.dumps({"data": [{"index": 1, "embedding": [3.0, 4.0]}, {"index": 0, "embedding": [1.0, 2.0]}]})
    assert output_rows("openai-embeddings", openai).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(RunError, match="no readable output tensor"):
        output_rows("oip-v2", b'{"error": "nope"}')


def test_the_batch_size_is_read_from_server_timing():
    assert batch_rows("queue;dur=0.120, infer;dur=4.500, batch;desc=17") == 17
    assert batch_rows("app;dur=3") is None
    assert batch_rows(None) is None


def test_a_refused_request_is_a_run_error_naming_the_status(server):
    protocol = make_protocol("oip-v2", "no-such-model", input_name="features")
    body = protocol.encode_features([0.0] * 8)
    with pytest.raises(RunError, match="answered 404"):
        collect_sequential(server.url, protocol, [Payload("features", body)], timeout=10)


def test_a_profile_serving_another_model_than_the_scenario_is_refused_before_any_server_starts():
    with pytest.raises(ConfigError, match="serves 'fraud'"):
        measure_agreement("fraud-fp32", "minilm-fp32", STEADY, n=4)


def test_a_protocol_whose_answers_hold_no_tensors_is_refused(tmp_path):
    scenario = tmp_path / "json.toml"
    scenario.write_text(STEADY.read_text().replace('protocol = "oip-v2"', 'protocol = "http-json"'))
    with pytest.raises(ConfigError, match="target.protocol"):
        measure_agreement("minilm-fp32", "minilm-int8", scenario, n=4)


# --- real servers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm(models_dir) -> dict:
    """fp32 against its dynamically quantised int8 twin, 64 inputs of the steady scenario."""
    result = measure_agreement("minilm-fp32", "minilm-int8", STEADY, n=64)
    json.dumps(result)  # JSON-able, as `compare` writes it
    return result


@pytest.mark.slow
def test_the_same_inputs_reach_both_variants_at_batch_1_and_in_batches_under_load(minilm):
    assert minilm["n"] == 64 and minilm["kind"] == "text-embedding" and minilm["metric"] == "embedding"
    for variant in ("a", "b"):
        assert minilm[variant]["batch1"]["max_batch_size"] == 1
        assert minilm[variant]["under_load"]["mean_batch_size"] > 4


@pytest.mark.slow
def test_int8_embeddings_are_close_to_fp32_but_not_equal(minilm):
    for when in ("batch1", "under_load"):
        result = minilm[when]
        assert 0.9 < result["cosine_mean"] < 0.9999
        assert result["cosine_min"] < result["cosine_mean"]
        assert 0.5 < result["nn_agreement"] <= 1.0


@pytest.mark.slow
def test_fp32_answers_the_same_whatever_it_is_batched_with(minilm):
    effect = minilm["a"]["batch_effect"]
    assert effect["cosine_min"] > 0.9999
    assert effect["nn_agreement"] == 1.0


@pytest.mark.slow
def test_int8_answers_change_with_batch_composition(minilm):
    """Dynamic quantisation scales activations per batch, padding included."""
    int8, fp32 = minilm["b"]["batch_effect"], minilm["a"]["batch_effect"]
    assert int8["cosine_min"] < 0.999 < fp32["cosine_min"]
    # batching alone moves int8 by a sizeable share of what quantisation itself does
    quantisation_gap = 1 - minilm["batch1"]["cosine_mean"]
    assert 1 - int8["cosine_mean"] > 0.25 * quantisation_gap


@pytest.mark.slow
def test_a_classifier_agrees_with_itself_on_every_label(models_dir, tmp_path):
    scenario = tmp_path / "fraud.toml"
    scenario.write_text(FRAUD_SCENARIO)
    result = measure_agreement("fraud-fp32", "fraud-fp32", scenario, n=64)
    assert result["kind"] == "tabular-classifier" and result["metric"] == "label" and result["n"] == 64
    for outcome in (result["batch1"], result["under_load"], result["a"]["batch_effect"]):
        assert outcome["top1_agreement"] == 1.0
        assert outcome["max_abs_diff"] < 1e-5


def test_greedy_answers_agree_token_by_token_and_say_where_they_diverge():
    from loadtest.analysis.agreement import first_divergence, token_agreement

    same = ["The", " capital", " is", " Paris", "."]
    assert first_divergence(same, same) is None
    assert first_divergence(same, [*same[:3], " Lyon", "."]) == 3
    assert first_divergence(same, same[:4]) == 4  # one answer ending early diverges where it ends
    found = token_agreement([same, same, same], [same, [*same[:3], " Lyon"], ["A", *same[1:]]], first_n=3)
    assert found["identical"] == pytest.approx(1 / 3) and found["diverged"] == 2
    assert found["first_n_match"] == pytest.approx(2 / 3)  # diverging at token 3 keeps the first 3
    assert (found["divergence_min"], found["divergence_median"]) == (0, 1.5)
    with pytest.raises(ValueError, match="2 against 1"):
        token_agreement([same, same], [same])
