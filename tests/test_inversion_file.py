"""Inversion files: bit-exact round trip; tampered, foreign, old or mismatched files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import unsample
from unsample.inversion import Inversion


@pytest.fixture(scope="module")
def inversion(tiny_model, tiny_image) -> Inversion:
    return unsample.invert(tiny_model, tiny_image, "a red cat", steps=6, guidance=2.0, method="euler", precision="float64")


def test_save_load_is_bit_exact(inversion: Inversion, tmp_path: Path) -> None:
    path = inversion.save(tmp_path / "inv.safetensors")
    back = Inversion.load(path)
    assert torch.equal(back.trajectory, inversion.trajectory) and back.trajectory.dtype == torch.float64
    assert torch.equal(back.image_latent, inversion.image_latent)
    assert back.metadata() == inversion.metadata()
    assert [p.name for p in tmp_path.iterdir()] == ["inv.safetensors"]  # no temp file left


def test_tampered_tensor_bytes_are_refused(inversion: Inversion, tmp_path: Path) -> None:
    path = inversion.save(tmp_path / "inv.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="digest"):
        Inversion.load(path)


def test_foreign_and_damaged_files_are_refused(tmp_path: Path) -> None:
    plain = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="not an unsample inversion"):
        Inversion.load(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x03not safetensors at all")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        Inversion.load(junk)
    with pytest.raises(ValueError, match="does not exist"):
        Inversion.load(tmp_path / "missing.safetensors")


def test_other_format_version_is_refused(inversion: Inversion, tmp_path: Path) -> None:
    path = inversion.save(tmp_path / "inv.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["unsample"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header["format_version"] = 99
    save_file(tensors, str(path), metadata={"unsample": json.dumps(header)})
    with pytest.raises(ValueError, match="format version 99"):
        Inversion.load(path)


def test_replay_with_another_model_is_refused(inversion: Inversion, tiny_v_pipeline_dir) -> None:
    other = unsample.load(str(tiny_v_pipeline_dir), device="cpu")
    with pytest.raises(ValueError, match="made with model"):
        unsample.reconstruct(other, inversion)


def test_save_refuses_bad_paths(inversion: Inversion, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must end in .safetensors"):
        inversion.save(tmp_path / "inv.pt")
    with pytest.raises(ValueError, match="does not exist"):
        inversion.save(tmp_path / "nope" / "inv.safetensors")


def _rewrite(path: Path, change) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["unsample"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header, tensors = change(header, tensors)
    save_file(tensors, str(path), metadata={"unsample": json.dumps(header)})


def test_edited_metadata_is_caught_by_the_digest(inversion: Inversion, tmp_path: Path) -> None:
    path = inversion.save(tmp_path / "inv.safetensors")
    _rewrite(path, lambda h, t: ({**h, "prompt": "a dog"}, t))
    with pytest.raises(ValueError, match="tensors or metadata do not match"):
        Inversion.load(path)


def _redigest(header: dict, tensors: dict) -> dict:
    from unsample.inversion import _digest

    meta = {k: v for k, v in header.items() if k != "sha256"}
    return {**meta, "sha256": _digest(tensors, meta)}


def test_wrong_field_types_and_missing_tensors_are_refused(inversion: Inversion, tmp_path: Path) -> None:
    path = inversion.save(tmp_path / "inv.safetensors")
    _rewrite(path, lambda h, t: (_redigest({**h, "steps": "five"}, t), t))
    with pytest.raises(ValueError, match="field 'steps' is str"):
        Inversion.load(path)
    path = inversion.save(tmp_path / "inv2.safetensors")
    _rewrite(path, lambda h, t: (_redigest({**h, "image_size": [64]}, t), t))
    with pytest.raises(ValueError, match="image_size"):
        Inversion.load(path)
    path = inversion.save(tmp_path / "inv3.safetensors")

    def drop(h: dict, t: dict) -> tuple[dict, dict]:
        t = {k: v for k, v in t.items() if k != "image_latent"}
        return _redigest(h, t), t

    _rewrite(path, drop)
    with pytest.raises(ValueError, match="'image_latent' is missing"):
        Inversion.load(path)


def test_same_model_name_other_fingerprint_says_why(inversion: Inversion, tiny_model) -> None:
    import dataclasses

    other = dataclasses.replace(inversion, model_fingerprint="0" * 16, model_name=tiny_model.name)
    with pytest.raises(ValueError, match="another --dtype"):
        other.check_model(tiny_model)
