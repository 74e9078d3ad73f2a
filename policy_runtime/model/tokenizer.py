"""Instruction tokenizers. `bytes`: our own byte-level tokenizer (id = byte + 3; 0 pad, 1 bos, 2 eos; vocab 259), used
by tiny test/demo models so nothing is trained or downloaded. Otherwise a local transformers tokenizer directory
(e.g. Qwen2.5-0.5B's), loaded with `local_files_only`.

Instructions are padded/truncated to a fixed length so the backbone graph has static shapes; pads sit at the
end of the instruction segment and are masked out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anchorvla.errors import UserError

BYTE_VOCAB_SIZE = 259
_PAD, _BOS, _EOS, _OFFSET = 0, 1, 2, 3


class ByteTokenizer:
    vocab_size = BYTE_VOCAB_SIZE

    def encode(self, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(texts), length), _PAD, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [_BOS, *(b + _OFFSET for b in text.encode("utf-8")), _EOS][:length]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask


class LocalTokenizer:
    """A transformers tokenizer read from a local directory (never the hub)."""

    def __init__(self, directory: str):
        from transformers import AutoTokenizer

        if not Path(directory).is_dir():
            raise UserError(
                f"tokenizer directory {directory} not found; set backbone.tokenizer to a local dir or 'bytes'"
            )
        self._tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.vocab_size = len(self._tok)

    def encode(self, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
        out = self._tok(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
        return out["input_ids"].astype(np.int64), out["attention_mask"].astype(np.int64)


def build_tokenizer(name: str) -> ByteTokenizer | LocalTokenizer:
    return ByteTokenizer() if name == "bytes" else LocalTokenizer(name)
