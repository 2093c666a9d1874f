"""Corpus -> document split -> byte-level BPE tokenizer -> packed train / held-out token arrays.

Held-out documents are chosen before the tokenizer is trained, so neither the tokenizer nor the
model ever sees them. Output: models/demo/model/tokenizer*.json, models/demo/tokens.npy (held-out,
(N_HELDOUT_SEQS, SEQ_LEN) uint16) and .work/demo/train_tokens.npy (all training sequences).
"""

import json
import random
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from scripts.demo.common import (
    BOS_TOKEN,
    CORPUS_SOURCES,
    HELDOUT_TOKENS_PATH,
    MODEL_DIR,
    N_HELDOUT_SEQS,
    SEED,
    SEQ_LEN,
    TRAIN_TOKENS_PATH,
    VOCAB_SIZE,
    setup_logging,
)

HELDOUT_CHAR_FRACTION = 0.2  # ~2.2 MB of text, enough for N_HELDOUT_SEQS sequences

log = setup_logging("prepare_data")


def read_documents(sources_dir: Path) -> list[str]:
    """Every .rst.txt source file is one document, in sorted path order (deterministic)."""
    paths = sorted(sources_dir.rglob("*.rst.txt"))
    if not paths:
        raise FileNotFoundError(f"no .rst.txt files under {sources_dir}; run scripts/demo/fetch_corpus.sh first")
    return [path.read_text(encoding="utf-8", errors="replace") for path in paths]


def split_documents(documents: list[str], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle documents with a fixed seed; the first ones up to `heldout_fraction` of the characters are held out."""
    shuffled = list(documents)
    random.Random(seed).shuffle(shuffled)
    total_chars = sum(len(doc) for doc in shuffled)
    heldout: list[str] = []
    heldout_chars = 0
    while heldout_chars < heldout_fraction * total_chars:
        heldout.append(shuffled.pop(0))
        heldout_chars += len(heldout[-1])
    return shuffled, heldout


def train_tokenizer(documents: list[str]) -> Tokenizer:
    """GPT-2-style byte-level BPE; id 0 is <|endoftext|> (BOS/EOS/PAD). No post-processor: callers add BOS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, model_dir: Path) -> None:
    """Save tokenizer.json + tokenizer_config.json + special_tokens_map.json for PreTrainedTokenizerFast."""
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=BOS_TOKEN,
        pad_token=BOS_TOKEN,
        unk_token=BOS_TOKEN,
        model_max_length=SEQ_LEN,
    )
    wrapped.save_pretrained(model_dir)
    special_tokens = {name: BOS_TOKEN for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (model_dir / "special_tokens_map.json").write_text(json.dumps(special_tokens, indent=2) + "\n")


def pack_sequences(tokenizer: Tokenizer, documents: list[str]) -> np.ndarray:
    """Join documents as BOS doc BOS doc ...; cut into rows of SEQ_LEN - 1 tokens, each prefixed by BOS."""
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(documents):
        stream.append(bos_id)
        stream.extend(encoding.ids)
    body_len = SEQ_LEN - 1
    n_rows = len(stream) // body_len
    body = np.asarray(stream[: n_rows * body_len], dtype=np.uint16).reshape(n_rows, body_len)  # (N, P-1)
    bos_column = np.full((n_rows, 1), bos_id, dtype=np.uint16)
    return np.concatenate([bos_column, body], axis=1)  # (N, P)


def main() -> None:
    documents = read_documents(CORPUS_SOURCES)
    train_docs, heldout_docs = split_documents(documents, HELDOUT_CHAR_FRACTION, SEED)
    log.info("documents: %d train, %d held out", len(train_docs), len(heldout_docs))
    tokenizer = train_tokenizer(train_docs)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, MODEL_DIR)
    train_tokens = pack_sequences(tokenizer, train_docs)
    heldout_tokens = pack_sequences(tokenizer, heldout_docs)
    if len(heldout_tokens) < 1024:
        raise ValueError(f"only {len(heldout_tokens)} held-out sequences; need >= 1024")
    heldout_tokens = heldout_tokens[:N_HELDOUT_SEQS]
    TRAIN_TOKENS_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.save(TRAIN_TOKENS_PATH, train_tokens)
    np.save(HELDOUT_TOKENS_PATH, heldout_tokens)
    log.info("train %s (%d tokens), held-out %s", train_tokens.shape, train_tokens.size, heldout_tokens.shape)


if __name__ == "__main__":
    main()
