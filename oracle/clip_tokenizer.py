"""CLIP's prompt tokenizer: OpenAI's byte-level BPE (49408 tokens), <|startoftext|> ... <|endoftext|>,
truncated to 77 tokens with <|endoftext|> kept last, padded with id 0.

Built on the ``tokenizers`` package from the merges shipped in this package
(clip-bpe-merges.txt.gz: the 48894 merges of OpenAI's CLIP, identical in open_clip's
bpe_simple_vocab_16e6.txt.gz and in Hugging Face's merges.txt; sha256-checked). The vocabulary is
not shipped: like open_clip, it is derived from the merges (256 byte symbols, the same with "</w>",
one token per merge, then the two special tokens).

Two text cleanings, one per reference:
- ``hf``: what Hugging Face's CLIP tokenizers do (NFC, whitespace runs -> one space, lower case);
  PickScore and the CLIP score of transformers-layout checkpoints were computed with it.
- ``open_clip``: what open_clip's tokenizer does (ftfy.fix_text, HTML entities unescaped twice,
  whitespace runs -> one space, strip, lower case); HPSv2 and OpenCLIP checkpoints. ftfy is used
  when installed; without it NFC stands in, which differs only for text ftfy repairs (curly
  quotes, mojibake, full-width letters); `pip install ftfy` for open_clip's exact tokens.

The padding id does not matter: CLIP's text tower is causal and pools the first <|endoftext|>.
"""
import gzip
import html
import os
import re
from functools import lru_cache
from typing import List, Sequence, Union

import torch

from .tokenizer import TokenizerError, _sha256, prompt_strings

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED_MERGES = os.path.join(HERE, "clip-bpe-merges.txt.gz")
SHIPPED_MERGES_SHA256 = "65412be22e2e83f3480ba8a7d543d7966e3e84db182170ca91eb5748052f9c9c"
MERGE_COUNT = 49152 - 256 - 2
CONTEXT_LENGTH = 77
# the special tokens' names, which a prompt may spell out: OpenAI's and Hugging Face's, open_clip's
SPECIAL = {"hf": ("<|startoftext|>", "<|endoftext|>"), "open_clip": ("<start_of_text>", "<end_of_text>")}
CLEANINGS = tuple(SPECIAL)
# CLIP's word split, after the special tokens (open_clip's SimpleTokenizer and Hugging Face's CLIPTokenizer)
WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
REINSTALL = "reinstall the node pack (its oracle/clip-bpe-merges.txt.gz is part of it)"


def byte_symbols() -> List[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values, in vocabulary order: the bytes that
    are printable characters themselves first, then the others mapped to chr(256), chr(257), ..."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


@lru_cache(maxsize=1)
def _merges():
    if not os.path.isfile(SHIPPED_MERGES):
        raise TokenizerError("the pack's oracle/clip-bpe-merges.txt.gz is missing", REINSTALL)
    digest = _sha256(SHIPPED_MERGES)
    if digest != SHIPPED_MERGES_SHA256:
        raise TokenizerError(f"the pack's oracle/clip-bpe-merges.txt.gz is damaged (sha256 {digest[:12]}...)",
                             REINSTALL)
    with gzip.open(SHIPPED_MERGES, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1:MERGE_COUNT + 1]  # line 0 is "#version: 0.2"
    return [tuple(line.split()) for line in lines]


def vocabulary(special=SPECIAL["hf"]) -> dict:
    """token -> id: 256 byte symbols, the same ending words ("</w>"), one token per merge, then the
    start and end tokens (49406, 49407)."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in _merges()] + list(special)
    return {t: i for i, t in enumerate(tokens)}


def _ftfy_or_none():
    try:
        import ftfy
    except ImportError:
        return None
    return ftfy.fix_text


class ClipTokenizer:
    """Callable: prompts -> input_ids [B, 77] int64 (the cleaning of `cleaning`, see the module doc)."""

    def __init__(self, cleaning: str = "hf", context_length: int = CONTEXT_LENGTH):
        if cleaning not in CLEANINGS:
            raise ValueError(f"cleaning must be one of {CLEANINGS}, got {cleaning!r}")
        try:
            from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
        except ImportError as e:  # pragma: no cover
            raise TokenizerError("the `tokenizers` package is missing", "pip install tokenizers") from e
        start, end = SPECIAL[cleaning]
        vocab = vocabulary((start, end))
        tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges(), continuing_subword_prefix="",
                                   end_of_word_suffix="</w>", fuse_unk=False, unk_token=end))
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(WORDS), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.add_special_tokens([start, end])
        self._tok = tok
        self.cleaning = cleaning
        self.context_length = int(context_length)
        self.start_id, self.end_id = vocab[start], vocab[end]
        self.vocab_size = len(vocab)
        self._fix_text = _ftfy_or_none() if cleaning == "open_clip" else None

    def clean(self, text: str) -> str:
        if self.cleaning == "hf":
            return text
        if self._fix_text is not None:
            text = self._fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        return re.sub(r"\s+", " ", text).strip()

    def __call__(self, prompts: Union[str, Sequence[str]]) -> torch.Tensor:
        prompts = prompt_strings(prompts)
        encoded = self._tok.encode_batch([self.clean(p) for p in prompts], add_special_tokens=False)
        ids = torch.zeros(len(prompts), self.context_length, dtype=torch.long)
        for row, e in zip(ids, encoded):
            tokens = [self.start_id] + e.ids[:self.context_length - 2] + [self.end_id]
            row[:len(tokens)] = torch.tensor(tokens)
        return ids
