"""The tiny Llama builder: deterministic, valid safetensors/tokenizer, strict CLI."""

import hashlib
import json
import struct

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from hyperflexis_sglang.sglang_ext import tiny_model as tm  # noqa: E402

SMALL = dict(layers=1, hidden=64, heads=4, kv_heads=2, vocab=512, intermediate=128)


def _digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return header, raw[8 + n:]


def test_same_seed_same_bytes_and_other_seed_other_weights(tmp_path):
    spec = tm.TinyLlamaSpec(**SMALL)
    a = tm.write_model(spec, tmp_path / "a")
    b = tm.write_model(spec, tmp_path / "b")
    c = tm.write_model(tm.TinyLlamaSpec(**SMALL, seed=1), tmp_path / "c")
    assert _digests(a) == _digests(b)
    assert _digests(a)["model.safetensors"] != _digests(c)["model.safetensors"]
    assert _digests(a)["tokenizer.json"] == _digests(c)["tokenizer.json"]


@pytest.mark.parametrize("dtype,code,width", [("float32", "F32", 4), ("float16", "F16", 2), ("bfloat16", "BF16", 2)])
def test_safetensors_layout(tmp_path, dtype, code, width):
    spec = tm.TinyLlamaSpec(**SMALL, dtype=dtype)
    out = tm.write_model(spec, tmp_path / dtype)
    header, data = _read_safetensors(out / "model.safetensors")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert len(tensors) == 3 + 9 * spec.layers
    end = 0
    for name in sorted(tensors, key=lambda k: tensors[k]["data_offsets"][0]):
        start, stop = tensors[name]["data_offsets"]
        assert start == end and tensors[name]["dtype"] == code
        assert stop - start == width * int(np.prod(tensors[name]["shape"]))
        end = stop
    assert end == len(data)
    assert tensors["model.layers.0.self_attn.k_proj.weight"]["shape"] == [32, 64]


def test_bfloat16_matches_float32_after_rounding(tmp_path):
    ref = tm.build_weights(tm.TinyLlamaSpec(**SMALL))["lm_head.weight"]
    out = tm.write_model(tm.TinyLlamaSpec(**SMALL, dtype="bfloat16"), tmp_path / "bf16")
    header, data = _read_safetensors(out / "model.safetensors")
    start, stop = header["lm_head.weight"]["data_offsets"]
    bits = np.frombuffer(data[start:stop], "<u2").astype(np.uint32) << 16
    np.testing.assert_allclose(bits.view(np.float32).reshape(ref.shape), ref, rtol=2 ** -8)


def test_safetensors_library_reads_it(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    spec = tm.TinyLlamaSpec(**SMALL)
    loaded = st.load_file(str(tm.write_model(spec, tmp_path / "m") / "model.safetensors"))
    for name, arr in tm.build_weights(spec).items():
        np.testing.assert_array_equal(loaded[name], arr)


def test_tokenizer_and_config_agree(tmp_path):
    from tokenizers import Tokenizer

    out = tm.write_model(tm.TinyLlamaSpec(**SMALL), tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() == config["vocab_size"] == 512
    ids = tok.encode("Hello, world!").ids
    assert ids[0] == config["bos_token_id"] and tok.decode(ids) == "Hello, world!"
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())


def test_large_vocab_is_padded_with_reserved_tokens():
    tok = tm.build_tokenizer(4096)
    assert tok.get_vocab_size() == 4096
    assert tok.token_to_id("<|reserved_0|>") is not None


def test_ensure_builds_once_and_rebuilds_on_spec_change(tmp_path):
    target = tmp_path / "cache" / "tiny"
    spec = tm.TinyLlamaSpec(**SMALL)
    assert tm.ensure_tiny_model(target, spec) == target
    stamp = (target / tm.STAMP_FILE).stat().st_mtime_ns
    tm.ensure_tiny_model(target, spec)
    assert (target / tm.STAMP_FILE).stat().st_mtime_ns == stamp
    tm.ensure_tiny_model(target, tm.TinyLlamaSpec(**SMALL, seed=3))
    assert json.loads((target / tm.STAMP_FILE).read_text())["seed"] == 3
    assert [p.name for p in target.parent.iterdir()] == ["tiny"]  # no temp dirs left


@pytest.mark.parametrize("argv,flag", [
    (["--heads", "3"], "--heads"),
    (["--kv-heads", "3"], "--kv-heads"),
    (["--vocab", "10"], "--vocab"),
    (["--layers", "0"], "--layers"),
    (["--layers", "two"], "--layers"),
    (["--dtype", "int8"], "--dtype"),
])
def test_cli_rejects_bad_flags_with_exit_2(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        tm.main(["--out", str(tmp_path / "x")] + argv)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_writes_model(tmp_path, capsys):
    assert tm.main(["--out", str(tmp_path / "m"), "--layers", "1", "--hidden", "64",
                    "--intermediate", "128", "--vocab", "512"]) == 0
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
