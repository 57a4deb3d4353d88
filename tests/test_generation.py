"""Text generation's scheduler on the tiny seeded decoder: continuous batching gives each sequence the tokens it
gets alone, slots free and are reused, cancelled sequences leave, and the limits hold. Plus the pure parts:
admission plans, slot compaction, sampling, detokenising with stop strings, and OpenAI request checks."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
import pytest

from reference_server.completion_request import parse_chat, parse_completion
from reference_server.decoder import Decoder, greedy_generate
from reference_server.decoder_graph import TINY_CONFIG, build_decoder_graph, random_weights
from reference_server.detokenizer import TextStream
from reference_server.errors import BadRequest, Overloaded
from reference_server.generation import (
    GenerationConfig,
    GenerationRequest,
    Generator,
    Scheduler,
    Token,
    compaction_moves,
    decode_bias,
    plan_admission,
)
from reference_server.kv_cache import KVCache
from reference_server.sampling import SamplingParams, sample

EOS = TINY_CONFIG.eos_token_ids[0]


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    model = build_decoder_graph(random_weights(TINY_CONFIG, seed=0), TINY_CONFIG)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return Decoder(ort.InferenceSession(model.SerializeToString(), options), TINY_CONFIG)


class EosLoving:
    """The tiny decoder, but end-of-sequence is always the likeliest next token."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder, self.config = decoder, decoder.config

    def empty_cache(self, batch):
        return self.decoder.empty_cache(batch)

    def run(self, *args):
        logits, keys, values = self.decoder.run(*args)
        logits[:, EOS] += 1000.0
        return logits, keys, values


def prompts(seed: int, lengths: list[int]) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(3, 259, size=n)] for n in lengths]


def greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, **kw)


def run_all(scheduler: Scheduler, requests: list[GenerationRequest], every: int = 1) -> dict[int, list[Token]]:
    """Step until idle, adding one request to the queue every ``every`` iterations; each request's tokens."""
    tokens: dict[int, list[Token]] = {id(r): [] for r in requests}
    pending = list(requests)
    step = 0
    while pending or not scheduler.idle:
        if pending and step % every == 0:
            scheduler.waiting.append(pending.pop(0))
        assert len(scheduler.running) <= scheduler.config.max_streams
        for request, token in scheduler.step():
            tokens[id(request)].append(token)
        step += 1
        assert step < 10_000
    return tokens


def test_sequences_batched_as_they_arrive_get_the_tokens_each_gets_alone(decoder):
    # 3 slots for 8 sequences arriving every other iteration: slots free and are reused, sequences
    # of every length decode together, and the 150-token prompt is prefilled in chunks of 64
    # while the others decode.
    texts = prompts(1, [5, 17, 3, 40, 150, 9, 12, 1])
    alone = [greedy_generate(decoder, p, 20) for p in texts]
    scheduler = Scheduler(decoder, GenerationConfig(max_streams=3, max_context=200, max_prefill_tokens=64))
    requests = [GenerationRequest(p, greedy(20)) for p in texts]
    got = run_all(scheduler, requests, every=2)
    for request, expected in zip(requests, alone, strict=True):
        assert [t.id for t in got[id(request)]] == expected
        assert got[id(request)][-1].finish == "length"
        assert all(t.finish is None for t in got[id(request)][:-1])
    assert scheduler.running == [] and scheduler.partial is None


def test_a_long_prompt_is_prefilled_a_budget_at_a_time_while_others_decode(decoder):
    scheduler = Scheduler(decoder, GenerationConfig(max_streams=2, max_context=300, max_prefill_tokens=32))
    short, long = (GenerationRequest(p, greedy(30)) for p in prompts(2, [4, 100]))
    scheduler.waiting.extend([short, long])
    first = scheduler.step()  # the short prompt fits; the long one waits behind it (order is kept)
    assert [r for r, _ in first] == [short, short] and scheduler.partial is None
    chunks = 0
    while not any(r is long for r, _ in scheduler.step()):
        chunks += 1
        assert [s.request for s in scheduler.running] == [short]  # decoding on, one token an iteration
    assert chunks == 3  # 32 + 32 + 32 tokens in the staging slot, the last 4 with its first token


def test_one_iteration_prefills_the_waiting_prompts_together_within_the_budget(decoder):
    scheduler = Scheduler(decoder, GenerationConfig(max_streams=8, max_context=64, max_prefill_tokens=40))
    scheduler.waiting.extend(GenerationRequest(p, greedy(5)) for p in prompts(3, [10, 10, 10, 10, 10]))
    events = scheduler.step()  # four of ten (padded) fit the budget of 40, then one decode step each
    assert len(scheduler.running) == 4 and len(scheduler.waiting) == 1
    assert len(events) == 8


def test_a_cancelled_sequence_frees_its_slot_at_the_next_iteration(decoder):
    scheduler = Scheduler(decoder, GenerationConfig(max_streams=2, max_context=64))
    a, b, c = (GenerationRequest(p, greedy(50)) for p in prompts(4, [3, 4, 5]))
    scheduler.waiting.extend([a, b, c])
    scheduler.step()
    assert [s.request for s in scheduler.running] == [a, b] and list(scheduler.waiting) == [c]
    a.cancelled = True
    events = scheduler.step()
    assert [s.request for s in scheduler.running] == [b, c]  # c took the slot a left (b moved into slot 0)
    assert all(r is not a for r, _ in events)
    # c still gets exactly the tokens it gets alone, from a slot another sequence used before
    got = [t.id for r, t in events if r is c]
    while scheduler.running:
        b.cancelled = True
        got += [t.id for r, t in scheduler.step() if r is c]
    assert got == greedy_generate(decoder, c.prompt, 50)


def test_a_cancelled_request_leaves_the_queue_uncomputed(decoder):
    scheduler = Scheduler(decoder, GenerationConfig(max_streams=1, max_context=64))
    a, b = (GenerationRequest(p, greedy(5)) for p in prompts(5, [3, 3]))
    scheduler.waiting.extend([a, b])
    scheduler.step()
    b.cancelled = True
    tokens = [r for _ in range(10) for r, _ in scheduler.step()]
    assert b not in tokens and scheduler.idle


def test_eos_stops_unless_ignored_and_cannot_come_before_min_tokens(decoder):
    eos_first = EosLoving(decoder)
    for params, count, finish in [
        (greedy(10), 1, "stop"),
        (greedy(10, min_tokens=3), 4, "stop"),
        (greedy(10, ignore_eos=True), 10, "length"),
    ]:
        scheduler = Scheduler(eos_first, GenerationConfig(max_streams=1, max_context=64))
        request = GenerationRequest([5, 6, 7], params)
        tokens = run_all(scheduler, [request])[id(request)]
        assert len(tokens) == count and tokens[-1].finish == finish
        assert all(t.id != EOS for t in tokens[: params.min_tokens])


def test_sampling_with_a_seed_repeats_and_greedy_is_the_default(decoder):
    def generate(params: SamplingParams) -> list[int]:
        scheduler = Scheduler(decoder, GenerationConfig(max_streams=2, max_context=64))
        request = GenerationRequest([10, 11, 12], params)
        return [t.id for t in run_all(scheduler, [request])[id(request)]]

    seeded = generate(greedy(12, temperature=2.0, seed=7))
    assert seeded == generate(greedy(12, temperature=2.0, seed=7))
    assert generate(greedy(12)) == greedy_generate(decoder, [10, 11, 12], 12)


def test_sampling_draws_by_temperature_within_top_k_and_top_p():
    flat = np.zeros(100, np.float32)
    draws = {sample(flat, greedy(1, temperature=1.0), np.random.default_rng(seed)) for seed in range(50)}
    assert len(draws) > 30  # nearly uniform
    peaked = np.arange(100, dtype=np.float32)
    assert {sample(peaked, greedy(1, temperature=1.0, top_k=1), np.random.default_rng(s)) for s in range(20)} == {99}
    top_p = {sample(peaked, greedy(1, temperature=1.0, top_p=0.7), np.random.default_rng(s)) for s in range(50)}
    assert top_p == {99, 98}  # e^0 / sum = 0.63 < 0.7: the second likeliest is needed to reach it


def test_a_request_past_the_context_or_empty_is_refused(decoder):
    scheduler = Scheduler(decoder, GenerationConfig(max_streams=1, max_context=32))
    scheduler.check(GenerationRequest([1] * 16, greedy(16)))
    with pytest.raises(BadRequest, match="maximum context length is 32 tokens"):
        scheduler.check(GenerationRequest([1] * 16, greedy(17)))
    with pytest.raises(BadRequest, match="empty"):
        scheduler.check(GenerationRequest([], greedy(1)))


def test_the_waiting_queue_is_bounded(decoder):
    generator = Generator(decoder, GenerationConfig(max_streams=1, max_context=32, max_waiting=2))
    for _ in range(2):
        generator.submit(GenerationRequest([1, 2], greedy(4)))
    with pytest.raises(Overloaded, match="waiting"):
        generator.submit(GenerationRequest([1, 2], greedy(4)))


def test_the_generator_thread_hands_each_token_to_its_request_on_the_event_loop(decoder):
    texts = prompts(6, [4, 9, 2])

    async def main():
        generator = Generator(decoder, GenerationConfig(max_streams=2, max_context=64))
        generator.start()
        queues = [asyncio.Queue() for _ in texts]
        requests = [GenerationRequest(p, greedy(8), q.put_nowait) for p, q in zip(texts, queues, strict=True)]
        for request in requests:
            generator.submit(request)
        got = []
        for q in queues:
            tokens = [await q.get()]
            while tokens[-1].finish is None:
                tokens.append(await q.get())
            got.append(tokens)
        gone = asyncio.Queue()
        cancelled = GenerationRequest([3, 4], greedy(60), gone.put_nowait)
        generator.submit(cancelled)
        generator.cancel(cancelled)  # before any token of it is delivered
        await generator.stop()
        assert gone.empty()
        with pytest.raises(Overloaded, match="shutting down"):
            generator.submit(GenerationRequest([3, 4], greedy(1)))
        return got, generator

    got, generator = asyncio.run(main())
    for tokens, prompt in zip(got, texts, strict=True):
        assert [t.id for t in tokens] == greedy_generate(decoder, prompt, 8)
        times = [t.time_ns for t in tokens]
        assert times == sorted(times)
    assert generator.scheduler.idle


def test_a_failing_model_run_ends_its_sequences_with_an_error_and_the_generator_serves_on(decoder, capsys):
    class FailsOnce(EosLoving):
        failed = False

        def run(self, *args):
            if not self.failed:
                self.failed = True
                raise RuntimeError("a bug")
            return self.decoder.run(*args)

    async def main():
        generator = Generator(FailsOnce(decoder), GenerationConfig(max_streams=2, max_context=64))
        generator.start()
        first, second = asyncio.Queue(), asyncio.Queue()
        generator.submit(GenerationRequest([5, 6], greedy(3), first.put_nowait))
        failed = await first.get()
        generator.submit(GenerationRequest([5, 6], greedy(3), second.put_nowait))
        tokens = [await second.get() for _ in range(3)]
        await generator.stop()
        return failed, tokens

    failed, tokens = asyncio.run(main())
    assert failed.id == -1 and failed.finish == "error"
    assert [t.id for t in tokens] == greedy_generate(decoder, [5, 6], 3) and tokens[-1].finish == "length"
    assert "RuntimeError: a bug" in capsys.readouterr().err


def test_plan_admission_keeps_order_and_the_padded_budget():
    assert plan_admission([10, 10, 10], free_slots=8, budget=30, may_chunk=True) == (3, False)
    assert plan_admission([10, 30, 5], free_slots=8, budget=40, may_chunk=True) == (1, False)  # 2 x 30 > 40
    assert plan_admission([10, 10, 10], free_slots=2, budget=100, may_chunk=True) == (2, False)
    assert plan_admission([100, 5], free_slots=2, budget=64, may_chunk=True) == (0, True)  # begun in chunks
    assert plan_admission([100, 5], free_slots=2, budget=64, may_chunk=False) == (0, False)  # one at a time
    assert plan_admission([5], free_slots=0, budget=64, may_chunk=True) == (0, False)
    assert plan_admission([], free_slots=4, budget=64, may_chunk=True) == (0, False)


def test_compaction_moves_each_survivor_once_into_the_holes_below():
    assert compaction_moves(4, [3]) == []
    assert compaction_moves(4, [1]) == [(3, 1)]
    assert compaction_moves(4, [1, 2]) == [(3, 1)]
    assert compaction_moves(5, [0, 1]) == [(3, 0), (4, 1)]
    assert compaction_moves(5, [0, 4]) == [(3, 0)]


def test_the_cache_keeps_what_slots_in_use_hold_as_its_width_grows_and_shrinks():
    cache = KVCache(layers=2, kv_heads=2, head_dim=4, streams=3, capacity=300)
    rng = np.random.default_rng(0)
    keys = [rng.standard_normal((1, 2, 4, 40)).astype(np.float32) for _ in range(2)]
    values = [rng.standard_normal((1, 2, 40, 4)).astype(np.float32) for _ in range(2)]
    cache.write(1, 0, 0, 40, keys, values)
    cache.write(cache.staging, 0, 0, 40, keys, values)
    seen = []
    for needed in (65, 129, 300, 40, 40):  # up to the capacity, then down once four times too wide
        cache.fit(needed, in_use=[0, 1, cache.staging])
        seen.append(cache.width)
        k, v = cache.view(1, 1)
        assert k[0].shape == (1, 2, 4, cache.width) and v[0].flags.c_contiguous
        for layer in range(2):
            assert (k[layer][0, :, :, :40] == keys[layer][0]).all()
            assert (v[layer][0, :, :40, :] == values[layer][0]).all()
        assert (cache.view(cache.staging, 1)[0][1][0, :, :, :40] == keys[1][0]).all()
    assert seen == [128, 256, 300, 64, 64]


def test_decode_bias_masks_each_sequence_past_its_length():
    bias = decode_bias(np.array([0, 2]), 3)
    assert bias.shape == (2, 1, 1, 4)
    assert (bias[0, 0, 0] == [-1e9, -1e9, -1e9, 0]).all()
    assert (bias[1, 0, 0] == [0, 0, -1e9, 0]).all()


def _bytes_decoder(ids) -> str:
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def test_text_is_released_in_whole_characters_and_adds_up_to_the_whole():
    stream = TextStream(_bytes_decoder)
    emoji = list("a€b😀".encode())
    deltas = [stream.push(i) for i in emoji] + [stream.finish()]
    assert deltas == ["a", "", "", "€", "b", "", "", "", "😀", ""]
    assert "".join(deltas) == stream.text == "a€b😀"


def test_a_stop_string_cuts_the_text_and_is_held_back_until_it_is_known():
    stream = TextStream(_bytes_decoder, stop=["STOP"])
    deltas = [stream.push(i) for i in b"one ST two STOP three"]
    assert "".join(deltas) == "one ST two " and stream.stopped and stream.text == "one ST two "
    assert stream.finish() == ""


def test_openai_requests_are_checked_field_by_field():
    chat = parse_chat({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stream": True})
    assert chat.messages == ({"role": "user", "content": "hi"},) and chat.stream and chat.max_tokens is None
    assert parse_completion({"prompt": "x"}).max_tokens == 16
    assert parse_completion({"prompt": [[1, 2]], "max_tokens": 3}).prompt == (1, 2)
    bad = [
        (parse_chat, {"messages": []}, "at least one"),
        (parse_chat, {"messages": {"role": "user"}}, "must be a list"),
        (parse_chat, {"messages": [{"role": "robot", "content": "x"}]}, "role must be one of"),
        (parse_chat, {"messages": [{"role": "user", "content": 5}]}, "content must be a string"),
        (parse_chat, {"messages": [{"role": "user"}]}, "content is required"),
        (parse_completion, {"prompt": "x", "max_tokens": 0}, "at least 1"),
        (parse_completion, {"prompt": "x", "max_tokens": "5"}, "must be an integer"),
        (parse_completion, {"prompt": "x", "temperature": 3}, "at most 2"),
        (parse_completion, {"prompt": "x", "n": 2}, "not supported"),
        (parse_completion, {"prompt": "x", "stream_options": {"include_usage": True}}, "only when 'stream'"),
        (parse_completion, {"prompt": ["a", "b"]}, "one a request"),
        (parse_completion, {"prompt": 5}, "string or a list of token ids"),
        (parse_completion, [1], "JSON object"),
    ]
    for parse, body, message in bad:
        with pytest.raises(BadRequest, match=message):
            parse(body)
