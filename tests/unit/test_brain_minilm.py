"""The numpy MiniLM encoder against reference output of sentence-transformers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from callbridge.agent.brain.minilm import MiniLmEncoder

# Computed once with sentence-transformers (torch, CPU) from the same packaged
# model directory, normalize_embeddings=True; first 8 and last 4 dimensions.
REFERENCE = {
    "where is my order": (
        [-0.006211, -0.026039, 0.06837, 0.018741, 0.004616, 0.026507, -0.022413, -0.014551],
        [0.006295, 0.004763, -0.061073, -0.034922],
    ),
    "Hello, I would like to speak to a person please.": (
        [-0.072233, 0.01025, 0.05577, 0.013956, -0.053531, -0.045986, 0.056641, -0.005297],
        [0.039124, 0.084595, -0.062739, -0.039047],
    ),
    "Order 4572?": (
        [-0.071661, 0.019879, 0.084132, 0.006508, -0.034678, -0.015811, 0.017328, 0.039498],
        [0.024235, -0.085939, -0.008584, -0.060969],
    ),
}
REFERENCE_COSINES = {(0, 1): 0.258494, (0, 2): 0.507399, (1, 2): 0.172376}


@pytest.fixture(scope="module")
def encoder() -> MiniLmEncoder:
    return MiniLmEncoder.load()  # a missing model fails, with its own message


def test_matches_sentence_transformers_reference(encoder):
    texts = list(REFERENCE)
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    for row, (head, tail) in enumerate(REFERENCE.values()):
        np.testing.assert_allclose(vectors[row, :8], head, atol=2e-6)
        np.testing.assert_allclose(vectors[row, -4:], tail, atol=2e-6)
    for (a, b), cosine in REFERENCE_COSINES.items():
        assert float(vectors[a] @ vectors[b]) == pytest.approx(cosine, abs=2e-6)


def test_unit_norm_deterministic_and_batch_equals_single(encoder):
    texts = ["track my parcel", "a much longer sentence about billing and invoices and payments", "hi"]
    batch = encoder.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(batch, encoder.encode(texts))
    for row, text in enumerate(texts):  # padding in a batch must not change a row
        np.testing.assert_allclose(encoder.encode([text])[0], batch[row], atol=1e-6)


def test_paraphrases_are_closer_than_unrelated(encoder):
    a, b, unrelated = encoder.encode(
        ["where is my package", "has my parcel been shipped yet", "I would like to pay my invoice"])
    assert a @ b > a @ unrelated + 0.1


def test_empty_input_and_shared_instance(encoder):
    assert encoder.encode([]).shape == (0, 384)
    assert MiniLmEncoder.load() is encoder


def test_torch_is_not_imported(encoder):
    assert "torch" not in sys.modules


def test_a_fresh_load_encodes_the_same(encoder):
    # Load and encode speed: bench/minilm.py. Here only what a second load must keep: the same vectors.
    text = ["hi, I'm calling about order four five seven two"]
    np.testing.assert_array_equal(MiniLmEncoder(encoder.model_dir).encode(text), encoder.encode(text))
