"""Evo2LiteTokenizer: evo2lite's byte tokenizer (evo2lite/tokenizer.py) as a transformers tokenizer.

Ids are the UTF-8 bytes after our case policy (`evo2lite.tokenizer.to_bytes`, called, not copied, so the
rule lives in one place), token strings are chr(byte); EOS is byte 0 and PAD byte 1 (special tokens), no
BOS, and nothing is added around a sequence (Evo 2 scores and generates from the bare bytes). Decoding is
`evo2lite.tokenizer.decode` (ids 256..511 of the model's 512-entry vocabulary, never produced by a trained
model, decode to U+FFFD). There is no fast (Rust) tokenizer: it would restate the case policy as
`tokenizers` normalizers, a second copy of the rule that could drift, for bytes that need no speed-up.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizer

from .. import tokenizer as ours

NUM_BYTES = 256


class Evo2LiteTokenizer(PreTrainedTokenizer):
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"  # the model is causal without a padding mask: right padding only

    def __init__(self, eos_token: str = chr(ours.EOS_ID), pad_token: str = chr(ours.PAD_ID), **kwargs) -> None:
        kwargs.setdefault("split_special_tokens", True)  # the whole text goes through our case policy
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.pop("bos_token", None)
        super().__init__(eos_token=eos_token, pad_token=pad_token, bos_token=None, **kwargs)

    @property
    def vocab_size(self) -> int:
        return NUM_BYTES

    def get_vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(NUM_BYTES)}

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [chr(b) for b in ours.to_bytes(text)]

    def _convert_token_to_id(self, token: str) -> int:
        if len(token) != 1 or ord(token) >= NUM_BYTES:
            raise ValueError(f"{token!r} is not a byte token")
        return ord(token)

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index) if 0 <= index < NUM_BYTES else "\ufffd"

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return ours.decode([ord(t) if len(t) == 1 and ord(t) < NUM_BYTES else NUM_BYTES for t in tokens])

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.all_special_ids]
        return ours.decode(ids)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None
                                         ) -> list[int]:
        return token_ids_0 if token_ids_1 is None else token_ids_0 + token_ids_1

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens: bool = False):
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        return [0] * (len(token_ids_0) + len(token_ids_1 or []))

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save_pretrained, plus `auto_map` in tokenizer_config.json and the shims."""
        from .export import TOKENIZER_AUTO_MAP, write_remote_code

        out = super().save_pretrained(save_directory, *args, **kwargs)
        path = Path(save_directory) / "tokenizer_config.json"
        data = json.loads(path.read_text())
        data["auto_map"] = TOKENIZER_AUTO_MAP
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        write_remote_code(save_directory)
        return out

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is the 256 bytes: nothing to write
