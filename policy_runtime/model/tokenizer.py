"""Instruction tokenizers. `bytes`: our own byte-level tokenizer (id = byte + 3; 0 pad, 1 bos, 2 eos; vocab 259), used
by tiny test/demo models so nothing is trained or downloaded. Otherwise a Hugging Face `tokenizer.json` (e.g.
Qwen2.5-0.5B's) read with the `tokenizers` library only (numpy, no transformers or torch): training, the torch
engine and the onboard engines tokenize through this same class and file.

Instructions are padded/truncated to a fixed length so the backbone graph has static shapes; pads sit at the
end of the instruction segment and are masked out. `check_against_lm` refuses a tokenizer that can produce ids
the LM has no embedding row for, or whose end-of-text token is not the LM's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError

BYTE_VOCAB_SIZE = 259
TOKENIZER_FILE = "tokenizer.json"
_PAD, _BOS, _EOS, _OFFSET = 0, 1, 2, 3


class ByteTokenizer:
    source = "bytes"
    vocab_size = BYTE_VOCAB_SIZE
    pad_id, eos_id = _PAD, _EOS

    def encode(self, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(texts), length), _PAD, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [_BOS, *(b + _OFFSET for b in text.encode("utf-8")), _EOS][:length]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask


def _special_tokens(directory: Path) -> dict[str, str]:
    """pad_token / eos_token named by a Hugging Face directory's tokenizer_config.json (string or AddedToken)."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-download the tokenizer") from None
    found = {}
    for key in ("pad_token", "eos_token"):
        value = data.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            found[key] = value
    return found


class LocalTokenizer:
    """A Hugging Face tokenizer.json read from local files (never the hub). `source` is a directory holding
    tokenizer.json (an LM's directory: its tokenizer_config.json names the pad and eos tokens; without a pad token
    the eos token pads, masked out) or a tokenizer.json file as a checkpoint or bundle carries it (`save`: the
    padding token written into it). `pad_id`, when given (a bundle's manifest), is the padding id."""

    def __init__(self, source: str | Path, pad_id: int | None = None):
        from tokenizers import Tokenizer

        path = Path(source)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise UserError(
                f"tokenizer {source} not found (no {TOKENIZER_FILE}); set backbone.tokenizer to the LM's local "
                "directory, or 'bytes' for random towers"
            )
        try:
            self._tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # the tokenizers library raises its own Exception subclasses
            raise UserError(f"{file} is not a tokenizers file ({str(exc).splitlines()[0]})") from None
        self.source = str(file)
        special = _special_tokens(file.parent) if path.is_dir() else {}
        saved_pad = self._tok.padding["pad_token"] if self._tok.padding else None
        eos = special.get("eos_token")
        pad = special.get("pad_token") or saved_pad or eos
        if pad is None and pad_id is None:
            raise UserError(
                f"tokenizer {self.source} names no pad or eos token: add pad_token to the tokenizer_config.json "
                "beside it"
            )
        self.pad_id = pad_id if pad_id is not None else self._id(pad, "pad")
        self.eos_id = self._id(eos, "eos") if eos is not None else None
        self.vocab_size = max(self._tok.get_vocab(with_added_tokens=True).values()) + 1
        self._tok.no_truncation()
        self._length: int | None = None

    def _id(self, token: str, role: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise UserError(f"tokenizer {self.source}: its {role} token {token!r} is not in its vocabulary")
        return int(token_id)

    def encode(self, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
        if length != self._length:
            self._tok.enable_padding(
                length=length, pad_id=self.pad_id, pad_token=self._tok.id_to_token(self.pad_id)
            )
            self._tok.enable_truncation(max_length=length)
            self._length = length
        out = [self._tok.encode(text) for text in texts]  # no thread pool (a batch is a few short lines)
        return (
            np.asarray([e.ids for e in out], dtype=np.int64),
            np.asarray([e.attention_mask for e in out], dtype=np.int64),
        )

    def save(self, file: Path) -> None:
        """Write tokenizer.json with its pad token in it, so the file alone tokenizes as this object does."""
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(self._tok.to_str())
        copy.no_truncation()
        copy.enable_padding(pad_id=self.pad_id, pad_token=copy.id_to_token(self.pad_id))
        Path(file).write_text(copy.to_str())


def build_tokenizer(name: str | Path) -> ByteTokenizer | LocalTokenizer:
    return ByteTokenizer() if str(name) == "bytes" else LocalTokenizer(name)


def check_against_lm(
    tokenizer: ByteTokenizer | LocalTokenizer, rows: int, lm_eos: int | list[int] | None, lm: str
) -> None:
    """Refuse, in one line naming both sides, a tokenizer the LM `lm` (with `rows` embedding rows and end-of-text
    id(s) `lm_eos` from its config) cannot read."""
    if tokenizer.vocab_size > rows:
        raise UserError(
            f"tokenizer {tokenizer.source} has {tokenizer.vocab_size} token ids but the LM {lm} has {rows} "
            "embedding rows: use the LM's own tokenizer (backbone.tokenizer: its directory)"
        )
    known = {lm_eos} if isinstance(lm_eos, int) else set(lm_eos or [])
    if known and tokenizer.eos_id is not None and tokenizer.eos_id not in known:
        raise UserError(
            f"tokenizer {tokenizer.source} ends text with id {tokenizer.eos_id} but the LM {lm} with "
            f"{sorted(known)}: use the LM's own tokenizer (backbone.tokenizer: its directory)"
        )
