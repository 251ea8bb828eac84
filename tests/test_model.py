import shutil

import pytest

from encoder.model import load_encoder, model_fingerprint, resolve_model_path


def test_hub_names_are_refused_not_downloaded():
    with pytest.raises(ValueError, match="hub downloads are not allowed"):
        resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")


def test_folder_without_safetensors_is_refused(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="only safetensors"):
        load_encoder(str(d))


def test_fingerprint_follows_weights_and_tokenizer(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    before = model_fingerprint(d)
    assert before["sha256"] == model_fingerprint(tiny_model_dir)["sha256"]
    (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text().replace('"guitar"', '"guitars"'))
    assert model_fingerprint(d)["sha256"] != before["sha256"]
