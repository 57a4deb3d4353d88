"""The generative model: one ONNX graph for prefill and decode, held to a plain numpy forward pass.

The tiny seeded random model (2 layers, hidden 64, 4 query / 2 key-value heads, vocab 512) checks
the graph's arithmetic, its batching (right padding, each sequence's own cache length) and its
cache; the built SmolLM2 checks the weights, the tokenizer and the chat template by what it answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from tokenizers import Tokenizer

from reference_server.decoder import Decoder, DecoderConfig, attention_bias, greedy_generate
from reference_server.decoder_graph import TINY_CONFIG, random_weights, write_tiny_model
from reference_server.gguf_model import hf_rows
from reference_server.manifest import model_dir

SEED = 3
ATOL = 2e-4  # float32 through two layers, against float64 numpy


# ---------------------------------------------------------------- a plain numpy forward pass


def _rms_norm(x: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * scale


def _rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Hugging Face's rotate-half RoPE on [S, heads, D]."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
    angles = positions[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(angles)] * 2, -1)[:, None, :]
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rotated * sin


def numpy_logits(weights: dict[str, np.ndarray], c: DecoderConfig, ids: list[int]) -> np.ndarray:
    """Logits [S, V] at every position of one sequence, full causal attention, no cache, float64."""
    w = {name: value.astype(np.float64) for name, value in weights.items()}
    length, d = len(ids), c.head_dim
    positions = np.arange(length, dtype=np.float64)
    x = w["model.embed_tokens.weight"][ids]
    causal = np.triu(np.full((length, length), -np.inf), k=1)
    for i in range(c.num_layers):
        p = f"model.layers.{i}"
        h = _rms_norm(x, w[f"{p}.input_layernorm.weight"], c.rms_norm_eps)
        q = _rope((h @ w[f"{p}.self_attn.q_proj.weight"].T).reshape(length, c.num_heads, d), positions, c.rope_theta)
        k = _rope((h @ w[f"{p}.self_attn.k_proj.weight"].T).reshape(length, c.num_kv_heads, d), positions, c.rope_theta)
        v = (h @ w[f"{p}.self_attn.v_proj.weight"].T).reshape(length, c.num_kv_heads, d)
        k, v = np.repeat(k, c.group_size, axis=1), np.repeat(v, c.group_size, axis=1)  # head h reads kv h // group
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = np.einsum("hqk,khd->qhd", probs, v).reshape(length, c.num_heads * d)
        x = x + context @ w[f"{p}.self_attn.o_proj.weight"].T
        h = _rms_norm(x, w[f"{p}.post_attention_layernorm.weight"], c.rms_norm_eps)
        gate, up = h @ w[f"{p}.mlp.gate_proj.weight"].T, h @ w[f"{p}.mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[f"{p}.mlp.down_proj.weight"].T
    return _rms_norm(x, w["model.norm.weight"], c.rms_norm_eps) @ w["model.embed_tokens.weight"].T


# ---------------------------------------------------------------- batched calls, as a scheduler makes them


def prefill(decoder: Decoder, prompts: list[list[int]]):
    """One right-padded batch of prompts with no cache; returns logits and each prompt's keys and values."""
    c, width = decoder.config, max(map(len, prompts))
    ids = np.full((len(prompts), width), c.pad_token_id, np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
    positions = np.tile(np.arange(width, dtype=np.int64), (len(prompts), 1))
    lengths = [len(p) for p in prompts]
    keys, values = decoder.empty_cache(len(prompts))
    bias = attention_bias([0] * len(prompts), lengths, 0, width)
    logits, new_keys, new_values = decoder.run(ids, positions, bias, np.array(lengths) - 1, keys, values)
    caches = [
        ([k[row, :, :, :n] for k in new_keys], [v[row, :, :n, :] for v in new_values]) for row, n in enumerate(lengths)
    ]
    return logits, caches


def decode(decoder: Decoder, tokens: list[int], caches, junk: float = 0.0):
    """One decode step of several sequences whose caches differ in length: each cache is copied into
    a [B, KV, D, P] block of the longest one's size, its unused slots filled with ``junk``."""
    c, batch = decoder.config, len(tokens)
    lengths = [k[0].shape[-1] for k, _ in caches]
    slots = max(lengths)
    keys = [np.full((batch, c.num_kv_heads, c.head_dim, slots), junk, np.float32) for _ in range(c.num_layers)]
    values = [np.full((batch, c.num_kv_heads, slots, c.head_dim), junk, np.float32) for _ in range(c.num_layers)]
    for row, (k_rows, v_rows) in enumerate(caches):
        for layer in range(c.num_layers):
            keys[layer][row, :, :, : lengths[row]] = k_rows[layer]
            values[layer][row, :, : lengths[row], :] = v_rows[layer]
    logits, new_keys, new_values = decoder.run(
        np.array(tokens, np.int64)[:, None],
        np.array(lengths, np.int64)[:, None],
        attention_bias(lengths, [1] * batch, slots, 1),
        np.zeros(batch, np.int64),
        keys,
        values,
    )
    grown = [
        (
            [np.concatenate([k_rows[layer], new_keys[layer][row]], -1) for layer in range(c.num_layers)],
            [np.concatenate([v_rows[layer], new_values[layer][row]], -2) for layer in range(c.num_layers)],
        )
        for row, (k_rows, v_rows) in enumerate(caches)
    ]
    return logits, grown


# ---------------------------------------------------------------- the tiny random model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), seed=SEED)


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> tuple[Decoder, dict[str, np.ndarray]]:
    return Decoder.load(tiny_dir), random_weights(TINY_CONFIG, SEED)


PROMPTS = [[1, 40, 41, 42, 43, 44, 45, 46, 47], [1, 300, 7], [1, 99, 98, 97, 96, 95]]


def test_a_batched_right_padded_prefill_gives_each_prompt_the_numpy_logits(tiny):
    decoder, weights = tiny
    logits, _ = prefill(decoder, PROMPTS)
    assert logits.shape == (3, TINY_CONFIG.vocab_size)
    for row, prompt in enumerate(PROMPTS):
        np.testing.assert_allclose(logits[row], numpy_logits(weights, TINY_CONFIG, prompt)[-1], atol=ATOL)


def test_decode_steps_over_caches_of_different_lengths_match_numpy(tiny):
    decoder, weights = tiny
    logits, caches = prefill(decoder, PROMPTS)
    sequences = [list(p) for p in PROMPTS]
    for step in range(4):
        tokens = [int(t) for t in logits.argmax(-1)]
        for sequence, token in zip(sequences, tokens, strict=True):
            sequence.append(token)
        # Junk in the unused cache slots proves the bias masks them (1e4 would swamp any unmasked score).
        logits, caches = decode(decoder, tokens, caches, junk=1e4 if step % 2 else 0.0)
        for row, sequence in enumerate(sequences):
            np.testing.assert_allclose(logits[row], numpy_logits(weights, TINY_CONFIG, sequence)[-1], atol=ATOL)


def test_a_sequence_gets_the_same_logits_alone_as_in_a_batch(tiny):
    decoder, _ = tiny
    batch_logits, batch_caches = prefill(decoder, PROMPTS)
    step_logits, _ = decode(decoder, [5, 6, 7], batch_caches)
    for row, prompt in enumerate(PROMPTS):
        alone, cache = prefill(decoder, [prompt])
        np.testing.assert_allclose(batch_logits[row], alone[0], atol=1e-5)
        alone_step, _ = decode(decoder, [5 + row], cache)
        np.testing.assert_allclose(step_logits[row], alone_step[0], atol=1e-5)


def test_a_prompt_prefilled_in_two_chunks_matches_one_prefill(tiny):
    # S > 1 new tokens atop a cache: a chunked prefill, or a prompt's continuation.
    decoder, weights = tiny
    prompt = PROMPTS[0]
    _, [(keys, values)] = prefill(decoder, [prompt[:4]])
    rest = prompt[4:]
    logits, _, _ = decoder.run(
        np.array([rest], np.int64),
        np.arange(4, len(prompt), dtype=np.int64)[None, :],
        attention_bias([4], [len(rest)], 4, len(rest)),
        np.array([len(rest) - 1]),
        [k[None] for k in keys],
        [v[None] for v in values],
    )
    np.testing.assert_allclose(logits[0], numpy_logits(weights, TINY_CONFIG, prompt)[-1], atol=ATOL)


def test_no_cache_at_all_gives_what_one_masked_cache_slot_gives(tiny):
    decoder, _ = tiny
    prompt, c = PROMPTS[1], TINY_CONFIG
    args = (np.array([prompt]), np.arange(len(prompt))[None, :])
    empty = decoder.empty_cache(1)
    none, _, _ = decoder.run(*args, attention_bias([0], [3], 0, 3), np.array([2]), *empty)
    keys = [np.ones((1, c.num_kv_heads, c.head_dim, 1), np.float32)] * c.num_layers
    values = [np.ones((1, c.num_kv_heads, 1, c.head_dim), np.float32)] * c.num_layers
    one, _, _ = decoder.run(*args, attention_bias([0], [3], 1, 3), np.array([2]), keys, values)
    np.testing.assert_allclose(none, one, atol=5e-5)


def test_greedy_generate_follows_the_numpy_argmax(tiny):
    decoder, weights = tiny
    sequence = list(PROMPTS[2])
    generated = greedy_generate(decoder, sequence, 6)
    for token in generated:
        assert token == int(numpy_logits(weights, TINY_CONFIG, sequence)[-1].argmax())
        sequence.append(token)
    assert len(generated) == 6 or generated[-1] in TINY_CONFIG.eos_token_ids


def test_the_graph_reads_the_cache_only_through_matmuls(tiny_dir):
    # Concat or Transpose of the past would copy the whole cache at every step of every layer.
    model = onnx.load(str(tiny_dir / "fp32.onnx"))
    for node in model.graph.node:
        for name in node.input:
            if name.startswith(("past_key_", "past_value_")):
                assert node.op_type == "MatMul" or (node.op_type == "Shape" and name == "past_key_0"), node


def test_the_tiny_model_directory_is_laid_out_as_a_built_one(tiny_dir):
    assert DecoderConfig.load(tiny_dir) == TINY_CONFIG
    tokenizer = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    text = TINY_CONFIG.chat_prompt([{"role": "user", "content": "Héllo 42!"}])
    ids = tokenizer.encode(text).ids
    assert ids[0] == 1 and max(ids) < TINY_CONFIG.vocab_size
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_the_config_round_trips_through_json_and_formats_chatml():
    text = TINY_CONFIG.to_json()
    assert DecoderConfig.from_json(text) == TINY_CONFIG
    assert json.loads(text)["eos_token_ids"] == [2]
    assert TINY_CONFIG.chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_hf_rows_undoes_llama_cpp_permutation():
    # convert_hf_to_gguf.py's permute, applied to Hugging Face rows, then undone.
    heads, head_dim = 3, 8
    w = np.arange(heads * head_dim * 2, dtype=np.float32).reshape(heads * head_dim, 2)
    gguf_rows = w.reshape(heads, 2, head_dim // 2, 2).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(hf_rows(gguf_rows, heads), w)


# ---------------------------------------------------------------- the built SmolLM2

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2_dir(models_dir) -> Path:
    return model_dir(models_dir, "smollm2")


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir) -> Tokenizer:
    return Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def smollm2_fp32(smollm2_dir) -> Decoder:
    return Decoder.load(smollm2_dir, "fp32")


@pytest.fixture(scope="module")
def smollm2_int8(smollm2_dir) -> Decoder:
    return Decoder.load(smollm2_dir, "int8")


@pytest.fixture(scope="module")
def france_prompt(smollm2_dir, smollm2_tokenizer) -> list[int]:
    return smollm2_tokenizer.encode(DecoderConfig.load(smollm2_dir).chat_prompt(FRANCE)).ids


def test_smollm2_tokenizes_the_chat_template_with_its_special_tokens(smollm2_tokenizer, france_prompt):
    assert france_prompt[0] == 1 and france_prompt.count(1) == 2 and france_prompt.count(2) == 1
    assert smollm2_tokenizer.decode(france_prompt, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert smollm2_tokenizer.encode("in 2024").tokens == ["in", "Ġ", "2", "0", "2", "4"]  # digits one by one


def test_smollm2_fp32_answers_the_capital_of_france(smollm2_fp32, smollm2_tokenizer, france_prompt):
    generated = greedy_generate(smollm2_fp32, france_prompt, 12)
    assert smollm2_tokenizer.decode(generated, skip_special_tokens=False) == "The capital of France is Paris.<|im_end|>"


def test_smollm2_int8_starts_the_same_answer(smollm2_int8, smollm2_tokenizer, france_prompt):
    # On this CPU int8 gives the whole fp32 answer; across CPUs' int8 kernels the first words are what is held.
    generated = greedy_generate(smollm2_int8, france_prompt, 7)
    assert smollm2_tokenizer.decode(generated).startswith("The capital of France is Paris")
