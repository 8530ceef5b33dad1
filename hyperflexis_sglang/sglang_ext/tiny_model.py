"""Build a tiny random-weight Llama model directory for tests and CPU demos.

Guarantees:
- Nothing is downloaded: the byte-level BPE tokenizer is trained on built-in
  text and the weights come from a seeded NumPy generator.
- Deterministic: the same arguments give byte-identical files.
- Imports only the standard library, NumPy and `tokenizers`, so it runs
  before torch/SGLang are installed (the safetensors file is written by hand;
  the format is an 8-byte header length, a JSON header, then raw tensor bytes).
- The tokenizer has exactly `vocab` entries (padded with reserved tokens when
  the corpus yields fewer merges), so every id the model can emit decodes.

CLI: python -m hyperflexis_sglang.sglang_ext.tiny_model --out DIR
     [--layers 2 --hidden 256 --heads 4 --kv-heads 2 --vocab 1024 --seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_CACHE_DIR = Path("~/.cache/hyperflexis/tiny-llama")
STAMP_FILE = "hfx_tiny_model.json"  # written last: its presence marks a complete build
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! This is a tiny language model used for testing.",
    "SGLang schedules requests in prefill and decode phases.",
    "Service level objectives bound the time to first token and the time per output token.",
    "A scheduler orders the waiting queue and admits requests into a batch.",
    "The router sends each request to the replica with the best expected latency.",
    "What is the capital of France? The capital of France is Paris.",
    "Once upon a time there was a small model that answered every question.",
    "user: write a short poem about the sea. assistant: The sea is wide and blue.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 42 64 100 128 256 512 1000 1024 2048.",
)
_SYLLABLES = ("ka", "to", "mi", "re", "su", "lo", "pa", "ne", "vi", "da", "ge", "bu")
_DTYPES = {"float32": ("F32", np.float32), "float16": ("F16", np.float16), "bfloat16": ("BF16", None)}


@dataclasses.dataclass(frozen=True)
class TinyLlamaSpec:
    """Shape and seed of the generated model."""

    layers: int = 2  # decoder layers
    hidden: int = 256  # hidden size
    heads: int = 4  # attention heads
    kv_heads: int = 2  # key/value heads (GQA when < heads)
    vocab: int = 1024  # model and tokenizer vocabulary size
    intermediate: int = 512  # MLP width
    max_positions: int = 2048  # max_position_embeddings
    seed: int = 0  # weight RNG seed
    dtype: str = "float32"  # float32 | float16 | bfloat16

    def problems(self) -> list[tuple[str, str]]:
        """(flag, message) pairs for every invalid field; empty when valid."""
        out = [(f"--{f.name.replace('_', '-')}", "must be a positive integer")
               for f in dataclasses.fields(self)
               if f.name not in ("seed", "dtype") and getattr(self, f.name) <= 0]
        if out:
            return out
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            out.append(("--heads", "must divide --hidden into an even head size"))
        if self.heads % self.kv_heads:
            out.append(("--kv-heads", "must divide --heads"))
        if self.vocab < 300:
            out.append(("--vocab", "must be >= 300 (256 byte tokens + specials)"))
        if self.dtype not in _DTYPES:
            out.append(("--dtype", f"must be one of {sorted(_DTYPES)}"))
        if self.seed < 0:
            out.append(("--seed", "must be >= 0"))
        return out


def _corpus() -> list[str]:
    """Built-in sentences plus deterministic syllable words (enough BPE merges)."""
    words = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES]
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    return list(_SENTENCES) * 4 + lines


def build_tokenizer(vocab: int):
    """Byte-level BPE with <s>, </s>, <pad> (ids 0..2) and exactly `vocab` entries."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, min_frequency=1, special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    missing = vocab - tok.get_vocab_size()
    if missing > 0:
        tok.add_tokens([AddedToken(f"<|reserved_{i}|>", special=False) for i in range(missing)])
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return tok


def build_config(spec: TinyLlamaSpec, ids: dict[str, int]) -> dict:
    """Hugging Face LlamaConfig fields (legacy and v5 spellings of rope/dtype)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads, "head_dim": spec.hidden // spec.heads,
        "vocab_size": spec.vocab, "max_position_embeddings": spec.max_positions,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "initializer_range": 0.02,
        "rope_theta": 10000.0, "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "tie_word_embeddings": False, "use_cache": True,
        "torch_dtype": spec.dtype, "dtype": spec.dtype,
        "bos_token_id": ids[BOS], "eos_token_id": ids[EOS], "pad_token_id": ids[PAD],
    }


def build_weights(spec: TinyLlamaSpec) -> dict[str, np.ndarray]:
    """float32 weights ~ N(0, 0.02), norms = 1, drawn in a fixed order from `seed`."""
    rng = np.random.default_rng(spec.seed)
    head_dim = spec.hidden // spec.heads
    q, kv, h, m = spec.heads * head_dim, spec.kv_heads * head_dim, spec.hidden, spec.intermediate

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)

    w = {"model.embed_tokens.weight": normal(spec.vocab, h)}
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = normal(q, h)
        w[p + "self_attn.k_proj.weight"] = normal(kv, h)
        w[p + "self_attn.v_proj.weight"] = normal(kv, h)
        w[p + "self_attn.o_proj.weight"] = normal(h, q)
        w[p + "mlp.gate_proj.weight"] = normal(m, h)
        w[p + "mlp.up_proj.weight"] = normal(m, h)
        w[p + "mlp.down_proj.weight"] = normal(h, m)
        w[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
    w["model.norm.weight"] = np.ones(h, np.float32)
    w["lm_head.weight"] = normal(spec.vocab, h)
    return w


def _tensor_bytes(arr: np.ndarray, dtype: str) -> bytes:
    if dtype == "bfloat16":  # round-to-nearest-even on the upper 16 bits of float32
        bits = arr.astype("<f4").view("<u4").astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return bits.astype("<u2").tobytes()
    return arr.astype(np.dtype(_DTYPES[dtype][1]).newbyteorder("<")).tobytes()


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """Write a .safetensors file (tensors sorted by name, header padded to 8 bytes)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = _tensor_bytes(tensors[name], dtype)
        header[name] = {"dtype": _DTYPES[dtype][0], "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for data in blobs:
            f.write(data)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_model(spec: TinyLlamaSpec, out: Path) -> Path:
    """Write every file of the model into `out` (created if needed); return it."""
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(spec.vocab)
    ids = {t: tok.token_to_id(t) for t in (BOS, EOS, PAD)}
    tok.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
        "pad_token": PAD, "add_bos_token": True, "add_eos_token": False,
        "model_max_length": spec.max_positions, "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE})
    _write_json(out / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD})
    _write_json(out / "config.json", build_config(spec, ids))
    _write_json(out / "generation_config.json", {
        "bos_token_id": ids[BOS], "eos_token_id": ids[EOS], "pad_token_id": ids[PAD]})
    write_safetensors(out / "model.safetensors", build_weights(spec), spec.dtype)
    _write_json(out / STAMP_FILE, dataclasses.asdict(spec))
    return out


def ensure_tiny_model(path: str | os.PathLike | None = None,
                      spec: TinyLlamaSpec | None = None) -> Path:
    """Return a built model directory, building it only when missing or different.

    The build goes to a sibling temp dir and is renamed into place, so
    concurrent callers never see a half-written model.
    """
    spec = spec or TinyLlamaSpec()
    target = Path(path).expanduser() if path else DEFAULT_CACHE_DIR.expanduser()
    if _stamp(target) == dataclasses.asdict(spec):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write_model(spec, tmp)
        if target.exists() and _stamp(target) != dataclasses.asdict(spec):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; accept its build if it matches
            if _stamp(target) != dataclasses.asdict(spec):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _stamp(directory: Path) -> dict | None:
    try:
        return json.loads((directory / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hyperflexis_sglang.sglang_ext.tiny_model",
        description="Generate a tiny random-weight Llama model directory (no downloads).")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    defaults = TinyLlamaSpec()
    for f in dataclasses.fields(TinyLlamaSpec):
        kind = str if f.name == "dtype" else int
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind,
                       default=getattr(defaults, f.name), help="default: %(default)s")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))  # bad types/unknown flags: argparse exits 2
    out = args.pop("out")
    spec = TinyLlamaSpec(**args)
    problems = spec.problems()
    if problems:
        parser.error("; ".join(f"{flag} {msg}" for flag, msg in problems))  # exits 2
    write_model(spec, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
