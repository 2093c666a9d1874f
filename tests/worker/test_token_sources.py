"""Token sources (worker/token_sources.py): text to rows, the tokenizer guard, the cache, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from schema.config import StoreConfig
from schema.spec import JobSpec
from worker.errors import BadInput
from worker.prepare import prepare_job
from worker.registry import models_dir
from worker.token_sources import (
    TokenCache,
    TokenRule,
    bundled_tokenizer_fingerprint,
    check_tokenizer,
    open_array,
    resolve_text,
    tokenize_rows,
    tokenizer_fingerprint,
)

BOS = "<|endoftext|>"


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (id 0 = BOS) built here, no Hub: each word of `words` is one id."""
    vocab = {BOS: 0} | {w: i + 1 for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=BOS))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=BOS, pad_token=BOS)


WORDS = [f"w{i}" for i in range(1, 20)]
TEXT = " ".join(WORDS[:11])  # ids 1..11


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAEGAP_TOKEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAEGAP_DATA", str(tmp_path / "data"))
    return tmp_path / "cache"


@pytest.fixture
def cache(_cache: Path, tmp_path: Path) -> TokenCache:
    return TokenCache.of(StoreConfig(data_dir=tmp_path / "data"))


def test_text_to_rows_bos_first_and_cut_at_the_context() -> None:
    """SAELens's rule: BOS opens every row, the separator (BOS) joins documents, a last partial row is dropped."""
    rows = tokenize_rows([TEXT, "w12 w13 w14"], word_tokenizer(WORDS), TokenRule(context_size=5))
    assert rows.tolist() == [[0, 1, 2, 3, 4], [0, 5, 6, 7, 8], [0, 9, 10, 11, 0]]  # [0, 12, 13, 14] is cut


def test_text_to_rows_without_bos() -> None:
    rows = tokenize_rows([TEXT], word_tokenizer(WORDS), TokenRule(context_size=4, prepend_bos=False))
    assert rows.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from worker.token_sources import TokenRule, tokenize_rows, tokenizer_fingerprint
vocab = {{"<|endoftext|>": 0}} | {{f"w{{i}}": i for i in range(1, 20)}}
backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
t = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
text = " ".join(f"w{{i}}" for i in range(1, 12))
print(json.dumps([tokenize_rows([text] * 3, t, TokenRule(context_size=6)).tolist(), tokenizer_fingerprint(t)]))
"""


def test_the_same_rows_and_fingerprint_in_two_processes() -> None:
    root = str(Path(__file__).resolve().parents[2])
    outputs = []
    for seed in ("1", "2"):  # different hash seeds: nothing may depend on set/dict order
        done = subprocess.run(
            [sys.executable, "-c", _CHILD.format(root=root)], capture_output=True, text=True, check=True,
            env=os.environ | {"PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]
    assert outputs[0][1] == tokenizer_fingerprint(word_tokenizer(WORDS))  # and in this process
    assert outputs[0][0][0] == [0, 1, 2, 3, 4, 5]


def test_the_guard_refuses_the_demo_set_on_a_gpt2_vocabulary_model() -> None:
    """README's old mismatch: a model whose tokenizer is not the demo's, on the demo token set."""
    gpt2_like = word_tokenizer([f"Ġtok{i}" for i in range(50256)])  # a 50257-id vocabulary, built offline
    demo = open_array("demo")
    assert demo.tokenizer == bundled_tokenizer_fingerprint("demo")
    with pytest.raises(BadInput, match=r"made by the tokenizer of bundled model 'demo'.*not by model 'gpt2-small'"):
        check_tokenizer(demo, gpt2_like, "gpt2-small")
    own = PreTrainedTokenizerFast.from_pretrained(str(models_dir() / "demo" / "model"))
    check_tokenizer(demo, own, "demo")  # the demo model's own tokenizer passes


def test_a_bare_npy_runs_with_a_warning(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.zeros((2, 4), dtype=np.int32))
    bare = open_array(str(tmp_path / "t.npy"))
    assert bare.tokenizer is None and "bare .npy" in bare.warning
    check_tokenizer(bare, word_tokenizer(WORDS), "any")  # not refused


def _write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_files_and_dataset_dirs_give_the_same_rows_and_are_cached(
    tmp_path: Path, _cache: Path, cache: TokenCache
) -> None:
    import datasets

    tokenizer, rule = word_tokenizer(WORDS), TokenRule(context_size=4)
    (tmp_path / "a.txt").write_text(TEXT)
    jsonl = _write(tmp_path / "a.jsonl", [{"body": TEXT}])
    datasets.Dataset.from_dict({"body": [TEXT]}).to_parquet(str(tmp_path / "a.parquet"))
    datasets.Dataset.from_dict({"body": [TEXT]}).save_to_disk(str(tmp_path / "dir"))
    expected = tokenize_rows([TEXT], tokenizer, rule)
    for source, column in [(str(tmp_path / "a.txt"), "text"), (jsonl, "body"),
                           (str(tmp_path / "a.parquet"), "body"), (str(tmp_path / "dir"), "body")]:  # fmt: skip
        got = resolve_text(source, tokenizer, "m", rule, column, None, cache)
        assert got.tokens.tolist() == expected.tolist(), source
        assert got.tokenizer == tokenizer_fingerprint(tokenizer)
    assert len(list(_cache.glob("*.npy"))) == 4 and len(list(_cache.glob("*.json"))) == 4
    again = resolve_text(jsonl, tokenizer, "m", rule, "body", None, cache)  # read back from the cache
    assert again.tokens.tolist() == expected.tolist()


def test_pre_tokenized_rows_are_cut_to_the_context(tmp_path: Path, cache: TokenCache) -> None:
    source = _write(tmp_path / "p.jsonl", [{"input_ids": [0, 5, 6, 7, 8]}, {"input_ids": [0, 9, 10, 11]}])
    got = resolve_text(source, word_tokenizer(WORDS), "m", TokenRule(context_size=4), "text", None, cache)
    assert got.tokens.tolist() == [[0, 5, 6, 7], [0, 9, 10, 11]]
    assert got.tokenizer is None and "pre-tokenized" in got.warning


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"body": TEXT}], "has no column 'text'"),
        ([], "is empty"),
        ([{"text": "w1"}], "gives no full row"),
    ],
)
def test_bad_datasets_are_refused(tmp_path: Path, cache: TokenCache, records: list[dict], message: str) -> None:
    source = _write(tmp_path / "d.jsonl", records)
    with pytest.raises(BadInput, match=message):
        resolve_text(source, word_tokenizer(WORDS), "m", TokenRule(context_size=8), "text", None, cache)


def test_a_hub_dataset_offline_fails_at_once_saying_how_to_pass_a_local_one(
    monkeypatch: pytest.MonkeyPatch, cache: TokenCache
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tokenizer, rule = word_tokenizer(WORDS), TokenRule(context_size=8)
    with pytest.raises(BadInput, match=r"offline.*pass a local dataset with --tokens"):
        resolve_text("no-such-org/no-such-dataset", tokenizer, "m", rule, "text", 4, cache)


# -- through a job (the tiny model of tests/worker/conftest.py: 64 ids, context 24) ----------------


def tiny_job(assets: dict[str, str], **fields: object) -> JobSpec:
    base = dict(model=assets["model"], saes=[assets["blocks.1.hook_resid_pre"]], device="cpu", fit_sequences=2)
    return JobSpec(**(base | fields))


def tiny_text(path: Path, documents: int = 400) -> str:
    """The tiny tokenizer has no pre-tokenizer (one word per document), so each document is one word."""
    return _write(path, [{"text": f"t{1 + i % 63}"} for i in range(documents)])


def test_a_job_reads_text_through_the_models_tokenizer(tiny_assets: dict[str, str], tmp_path: Path) -> None:
    job = prepare_job(tiny_job(tiny_assets, tokens=tiny_text(tmp_path / "my.jsonl"), n_sequences=4))
    assert job.tokens.shape == (4, 24) and job.warnings == ()
    assert job.tokens[0, :6].tolist() == [0, 1, 0, 2, 0, 3]  # BOS opens the row and separates documents
    assert job.tokens[0, -2:].tolist() == [0, 12]  # 12 documents fill the first 24 positions
    assert job.tokens[1, :4].tolist() == [0, 13, 0, 14]  # the next row opens with BOS, not a separator too


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(tokens="demo"), r"made by the tokenizer of bundled model 'demo'"),  # another tokenizer's ids
        (dict(context_size=100), "context_size 100 is beyond the model's context of 24"),
        (dict(n_sequences=1000), "n_sequences=1000 but token set .* has 16 sequences"),
        (dict(text_column="body"), "has no column 'body'"),
        (dict(tokens=None), r"names no dataset \(metadata.dataset_path\)"),
    ],
)
def test_bad_job_token_input_is_refused(
    tiny_assets: dict[str, str], tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    source = tiny_text(tmp_path / "t.jsonl", documents=200)  # 200 documents: 16 rows of 24
    with pytest.raises(BadInput, match=message):
        prepare_job(tiny_job(tiny_assets, **({"tokens": source} | fields)))


def test_the_demo_saes_default_to_the_bundled_set() -> None:
    from worker.loading import load_sae, resolve_saes
    from worker.token_sources import source_name

    saes = [load_sae(ref, "cpu", "float32") for ref in resolve_saes("demo-res")]
    assert source_name(None, saes) == "demo"
