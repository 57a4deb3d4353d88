"""The ONNX Runtime ceiling: every length of the mix is on the clock, in its share."""

from __future__ import annotations

import numpy as np

from reference_server.ceiling import even_sample, rows_per_second
from reference_server.models import SessionSettings, load_model


def test_an_even_sample_carries_the_mixes_lengths_in_their_shares():
    rng = np.random.default_rng(1)
    lengths = sorted(np.concatenate([rng.integers(4, 17, 1600), rng.integers(17, 49, 400)]).tolist())
    sample = even_sample(lengths, 64)
    assert len(sample) == 64 and sample == sorted(sample)
    assert abs(np.mean(sample) - np.mean(lengths)) < 0.02 * np.mean(lengths)
    assert sum(n >= 17 for n in sample) == 13  # the long fifth: 12.8 of 64
    assert even_sample(lengths[:10], 64) == lengths[:10]


class Counting:
    """The real encoder, counting which batches it ran."""

    def __init__(self, model):
        self.model, self.ran = model, []

    def infer(self, rows):
        self.ran.append(id(rows))
        return self.model.infer(rows)


def test_the_ceiling_runs_every_batch_in_whole_passes_whatever_its_duration(models_dir):
    """Timing the first batches for a second measured only the short end of a length-sorted mix."""
    encoder = load_model(models_dir, "minilm", "fp32", SessionSettings(intra_op_threads=1))
    texts = [f"query {i}" for i in range(24)] + [" ".join(["a long support sentence"] * 10)] * 8
    ordered = sorted(encoder.prepare_texts(texts).rows, key=len)
    batches = [ordered[i : i + 4] for i in range(0, len(ordered), 4)]
    counting = Counting(encoder)
    rate = rows_per_second(counting, batches, seconds=0.0)
    ran = counting.ran[1:]  # after the warm-up batch
    assert sorted(ran) == sorted(map(id, batches))  # one whole pass: each batch once, the long ones included
    assert ran != [id(b) for b in batches]  # in a shuffled order, not shortest first
    assert 0 < rate < 1e5
