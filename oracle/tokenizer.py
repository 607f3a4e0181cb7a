"""BLIP's prompt tokenizer: bert-base-uncased WordPiece (lower-case, accents stripped, Chinese
characters split, control characters removed) plus BLIP's two special tokens [DEC] (30522) and
[ENC] (30523); [CLS] ... [SEP], truncated and padded (id 0) to 35 tokens, exactly as the original
``tokenizer(prompt, padding="max_length", truncation=True, max_length=35)``.

ImageReward's ``score`` feeds these ids unchanged (the first token stays [CLS]=101; [ENC] is not
substituted there).

Built on the ``tokenizers`` package only: no transformers, no network, no Hugging Face cache.
Vocabulary lookup: ``vocab.txt`` beside the checkpoint if there is one, else the copy shipped in
this package (bert-base-uncased-vocab.txt, verified by its sha256).
"""
import hashlib
import os
from typing import List, Optional, Sequence, Tuple, Union

import torch

from .image_reward import MAX_LENGTH

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED_VOCAB = os.path.join(HERE, "bert-base-uncased-vocab.txt")
SHIPPED_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
BLIP_SPECIAL_TOKENS = ("[DEC]", "[ENC]")


class TokenizerError(RuntimeError):
    """The prompt tokenizer cannot be built: `problem` says why, `fix` what to do."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. Fix: {fix}")


REINSTALL = "reinstall the node pack, or put bert-base-uncased's vocab.txt next to the ImageReward checkpoint"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_vocab(checkpoint_path: Optional[str] = None) -> str:
    """vocab.txt next to the checkpoint if present, else the shipped, sha256-checked copy."""
    if checkpoint_path:
        cand = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), "vocab.txt")
        if os.path.isfile(cand):
            return cand
    if not os.path.isfile(SHIPPED_VOCAB):
        raise TokenizerError("the pack's oracle/bert-base-uncased-vocab.txt is missing", REINSTALL)
    digest = _sha256(SHIPPED_VOCAB)
    if digest != SHIPPED_VOCAB_SHA256:
        raise TokenizerError(f"the pack's oracle/bert-base-uncased-vocab.txt is damaged (sha256 {digest[:12]}..., "
                             f"expected {SHIPPED_VOCAB_SHA256[:12]}...)", REINSTALL)
    return SHIPPED_VOCAB


def prompt_strings(prompts: Union[str, Sequence[str]]) -> List[str]:
    """One prompt or a sequence of them -> a list of str (TypeError naming a prompt that is not one)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} is {type(p).__name__}, expected str")
    return prompts


class BertTokenizer:
    """Callable: prompts -> (input_ids [B, L] int64, attention_mask [B, L] int64), L = max_length."""

    def __init__(self, vocab_path: Optional[str] = None, max_length: int = MAX_LENGTH):
        try:
            from tokenizers import BertWordPieceTokenizer
        except ImportError as e:  # pragma: no cover
            raise TokenizerError("the `tokenizers` package is missing", "pip install tokenizers") from e
        self.vocab_path = vocab_path or find_vocab(None)
        self.max_length = int(max_length)
        try:
            with open(self.vocab_path, encoding="utf-8") as f:
                tokens = set(line.rstrip("\n") for line in f)
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(f"cannot read the vocabulary {os.path.basename(self.vocab_path)} ({e})",
                                 "use bert-base-uncased's vocab.txt (one token a line)") from e
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in tokens]
        if missing:
            raise TokenizerError(f"{os.path.basename(self.vocab_path)} beside the checkpoint has no "
                                 f"{', '.join(missing)} token(s), so it is not a BERT vocab.txt",
                                 "delete it (the pack's own bert-base-uncased vocabulary is then used) or replace it")
        tok = BertWordPieceTokenizer(self.vocab_path, lowercase=True, strip_accents=None,
                                     clean_text=True, handle_chinese_chars=True)
        tok.add_special_tokens(list(BLIP_SPECIAL_TOKENS))
        tok.enable_truncation(max_length=self.max_length)
        tok.enable_padding(length=self.max_length, pad_id=tok.token_to_id("[PAD]"),
                           pad_token="[PAD]")
        self._tok = tok
        self.pad_token_id = tok.token_to_id("[PAD]")
        self.cls_token_id = tok.token_to_id("[CLS]")
        self.sep_token_id = tok.token_to_id("[SEP]")
        self.dec_token_id = tok.token_to_id("[DEC]")
        self.enc_token_id = tok.token_to_id("[ENC]")

    @classmethod
    def for_checkpoint(cls, checkpoint_path: Optional[str] = None, max_length: int = MAX_LENGTH):
        return cls(find_vocab(checkpoint_path), max_length=max_length)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, prompts: Union[str, Sequence[str]]) -> Tuple[torch.Tensor, torch.Tensor]:
        prompts = prompt_strings(prompts)
        enc = self._tok.encode_batch(prompts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long).reshape(len(prompts), self.max_length)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long).reshape(len(prompts), self.max_length)
        return ids, mask
