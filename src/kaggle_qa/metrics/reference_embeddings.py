"""Reference embeddings computed once per process.

One evaluation scores several answer lists against the same references (base, format-matched
base and fine-tuned; every context mode; the user questions for both models). The MiniLM
similarity embeds the references of each call in their own batches, so the same reference list,
encoder, batch size and thread count give the same tensor: :func:`encode_references` computes it
once and hands it back after. The key is the whole list, not each text: a text's embedding depends
in its last bits on the batch it is padded with (measured: up to 2e-7 on MiniLM), and reusing it
from another batch would change scores.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

import torch

from kaggle_qa.retrieval import load_sentence_encoder

MAX_HELD = 16  # reference lists kept (a few hundred 384-float rows each)
_HELD: OrderedDict[tuple, torch.Tensor] = OrderedDict()
ENCODED = Counter()  # reference lists actually encoded in this process, per encoder path (read by the tests)


def encode(texts: list[str], model_path: str | None, batch_size: int) -> torch.Tensor:
    """Unit-norm MiniLM (or `model_path`) embeddings of `texts`, as the similarity metric computes them."""
    model = load_sentence_encoder(str(model_path) if model_path else None)
    return model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)


def encode_references(texts: list[str], model_path: str | None, batch_size: int) -> torch.Tensor:
    """:func:`encode` of a reference list, computed once per (encoder, batch size, threads, list) in this process."""
    key = (str(model_path) if model_path else None, batch_size, torch.get_num_threads(), tuple(texts))
    if key in _HELD:
        _HELD.move_to_end(key)
        return _HELD[key]
    embeddings = encode(texts, model_path, batch_size)
    ENCODED[key[0]] += 1
    _HELD[key] = embeddings
    while len(_HELD) > MAX_HELD:
        _HELD.popitem(last=False)
    return embeddings


def clear() -> None:
    _HELD.clear()
