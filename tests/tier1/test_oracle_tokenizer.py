"""Prompt tokenizer: exact golden ids, BLIP special tokens, vocab lookup, offline use."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import student_teacher.oracle.tokenizer as tk
from student_teacher.oracle.tokenizer import BertTokenizer, TokenizerError, find_vocab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "data", "imagereward", "golden.json")


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


def test_golden_token_ids_exact(golden):
    tok = BertTokenizer()
    ids, mask = tok(golden["prompts"])
    assert ids.tolist() == golden["token_ids"]
    assert ids.shape == (5, 35)
    assert mask.tolist() == [[int(i != 0) for i in row] for row in golden["token_ids"]]
    # [CLS] stays first (ImageReward.score does not substitute [ENC])
    assert (ids[:, 0] == 101).all()


def test_truncation_keeps_sep(golden):
    ids, mask = BertTokenizer()("word " * 200)
    assert ids.shape == (1, 35) and ids[0, -1].item() == 102 and mask.all()


def test_blip_special_tokens():
    tok = BertTokenizer()
    assert (tok.dec_token_id, tok.enc_token_id) == (30522, 30523)
    assert tok.vocab_size == 30524
    ids, _ = tok("[ENC] hello")
    assert ids[0, 1].item() == 30523


def test_shipped_vocab_is_verified():
    path = find_vocab(None)
    assert path == tk.SHIPPED_VOCAB
    with open(path, encoding="utf-8") as f:
        assert sum(1 for _ in f) == 30522


def test_damaged_shipped_vocab_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "vocab.txt"
    shutil.copy(tk.SHIPPED_VOCAB, bad)
    with open(bad, "a") as f:
        f.write("extra\n")
    monkeypatch.setattr(tk, "SHIPPED_VOCAB", str(bad))
    with pytest.raises(TokenizerError, match="damaged.*sha256"):
        find_vocab(None)


def test_vocab_next_to_checkpoint_wins(tmp_path):
    ck = tmp_path / "ImageReward.pt"
    ck.write_bytes(b"")
    assert find_vocab(str(ck)) == tk.SHIPPED_VOCAB
    shutil.copy(tk.SHIPPED_VOCAB, tmp_path / "vocab.txt")
    assert find_vocab(str(ck)) == str(tmp_path / "vocab.txt")
    assert BertTokenizer.for_checkpoint(str(ck)).vocab_path == str(tmp_path / "vocab.txt")


def test_not_a_vocab_is_refused(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("hello\nworld\n")
    with pytest.raises(TokenizerError, match="not a BERT vocab"):
        BertTokenizer(str(p))


def test_works_offline_without_hf_cache(tmp_path, golden):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"), HOME=str(tmp_path))
    code = ("import json, sys\n"
            "from oracle.tokenizer import BertTokenizer\n"
            f"g = json.load(open({GOLDEN!r}))\n"
            "ids, _ = BertTokenizer()(g['prompts'])\n"
            "assert ids.tolist() == g['token_ids']\n"
            "assert 'transformers' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    assert not (tmp_path / "hf").exists()
