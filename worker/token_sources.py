"""Token sources: every way a job names its text resolves to one token set (docs/engine.md "Token sources").

A token set is the token array plus what made it: the tokenizer (a fingerprint of its vocabulary,
merges and special tokens), the context size and the BOS rule. Sources, in the order they are tried:

- none given: the SAE's own dataset (`cfg.metadata.dataset_path`, `context_size`, `prepend_bos`),
  read as SAELens's `ActivationsStore.from_sae` reads it; the bundled demo SAEs' dataset is the
  bundled token set `demo`. A Hub dataset streams; offline it fails at once, saying how to pass a
  local one.
- a bundled name (models/registry.json): its tokenizer is the bundled model's.
- a `.npy` of token ids: it carries no tokenizer, so the job runs with a warning (PreparedJob.warnings,
  stored on the job: `saegap status`, the report and the UI show it).
- a `.txt` (one document), `.jsonl` or `.parquet` file, or a `datasets.save_to_disk` directory: the
  text column (JobSpec.text_column, default `text`) is tokenized with the model's tokenizer; a
  `tokens` / `input_ids` column is taken as pre-tokenized rows (no tokenizer known: a warning).

Text is tokenized with SAELens's own `concat_and_batch_sequences` (BOS at the start of every row
when the SAE prepends it, the SAE's separator between documents), so the rows are those the SAE
was trained on; nothing depends on the process or host. Tokenized sets are cached under the data
directory of the job's store (TokenCache.of: passed down, never read from SAEGAP_DATA behind the
caller's back) keyed by source, tokenizer and rule, and recorded in that store's `token_sets` table,
so every worker on every host reads the identical array.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from sae_lens import SAE
from sae_lens.tokenization_and_batching import concat_and_batch_sequences
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from schema.config import StoreConfig
from worker.errors import BadInput, one_line
from worker.registry import models_dir, open_token_set, registry

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
TOKEN_COLUMNS = ("input_ids", "tokens")  # pre-tokenized datasets, as SAELens reads them
STREAMED_SEQUENCES = 256  # rows read from a streamed (Hub) dataset when the job gives no n_sequences
_LOCAL_HINT = (
    "pass a local dataset with --tokens: a .txt, .jsonl or .parquet file (column 'text'), "
    "a datasets.save_to_disk directory, or a .npy of token ids"
)


@dataclass(frozen=True)
class TokenRule:
    """How text becomes rows: SAELens's context size, BOS and document separator."""

    context_size: int
    prepend_bos: bool = True
    separator: str | int | None = "bos"  # SAELens sequence_separator_token
    concat: bool = True  # False: SAELens disable_concat_sequences


@dataclass(frozen=True)
class TokenSet:
    """A job's token array and what made it."""

    tokens: Int[np.ndarray, "seq pos"]
    source: str  # what the user named (or the SAE's dataset)
    tokenizer: str | None  # fingerprint; None when nothing says (a bare .npy, pre-tokenized rows)
    tokenizer_label: str  # a name for messages: the model or file the tokenizer came from
    rule: TokenRule | None  # None for arrays taken as they are
    warning: str | None = None


# -- tokenizers ---------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the tokenizer's vocabulary (and merges) and special tokens: equal iff text maps to the same ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {"vocab": tokenizer.get_vocab()}
    # bos/eos only: TransformerLens gives a tokenizer without a pad token one, which changes no text's ids
    special = {k: [getattr(tokenizer, k), getattr(tokenizer, f"{k}_id")] for k in ("bos_token", "eos_token")}
    payload = json.dumps({"model": model, "special": special}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@cache
def bundled_tokenizer_fingerprint(model_name: str) -> str:
    """The fingerprint of a bundled model's tokenizer, read from its directory (no model loaded)."""
    path = models_dir() / registry()["models"][model_name]["path"]
    return tokenizer_fingerprint(PreTrainedTokenizerFast.from_pretrained(str(path)))


def check_tokenizer(token_set: TokenSet, tokenizer: PreTrainedTokenizerBase | None, model_name: str) -> None:
    """The guard: refuse a token set made by another tokenizer than the model's, naming both."""
    if token_set.tokenizer is None or tokenizer is None:
        return
    theirs = tokenizer_fingerprint(tokenizer)
    if theirs != token_set.tokenizer:
        raise BadInput(
            f"token set {token_set.source!r} was made by the tokenizer of {token_set.tokenizer_label} "
            f"(sha256 {token_set.tokenizer[:12]}), not by model {model_name!r}'s (sha256 {theirs[:12]}); "
            f"its ids would mean other text: pass text (--tokens my.txt) to be tokenized by the model"
        )


# -- the SAE's own dataset and rule -------------------------------------------------------------


def sae_rule(saes: list[SAE[Any]], context_size: int | None, n_ctx: int) -> TokenRule:
    """The SAEs' shared rule (metadata context_size, prepend_bos, separator); context_size overrides theirs."""
    rules = {_rule_of(sae, context_size, n_ctx) for sae in saes}
    if len(rules) > 1:
        raise BadInput(f"the job's SAEs were trained with different token rules {sorted(map(str, rules))}; split them")
    rule = rules.pop()
    if rule.context_size > n_ctx:
        raise BadInput(f"context_size {rule.context_size} is beyond the model's context of {n_ctx} tokens")
    return rule


def _rule_of(sae: SAE[Any], context_size: int | None, n_ctx: int) -> TokenRule:
    meta = sae.cfg.metadata
    prepend = meta.get("prepend_bos")
    return TokenRule(
        context_size=context_size or meta.get("context_size") or n_ctx,
        prepend_bos=True if prepend is None else bool(prepend),
        separator=meta.get("sequence_separator_token", "bos"),
        concat=not meta.get("disable_concat_sequences", False),
    )


def sae_dataset(saes: list[SAE[Any]]) -> str:
    """The dataset the job's SAEs were trained on (their metadata.dataset_path), which must agree."""
    paths = {sae.cfg.metadata.get("dataset_path") for sae in saes}
    if len(paths) > 1:
        raise BadInput(f"the job's SAEs were trained on different datasets {sorted(map(str, paths))}; pass --tokens")
    path = paths.pop()
    if not path:
        raise BadInput(f"the SAE's cfg.json names no dataset (metadata.dataset_path); {_LOCAL_HINT}")
    return str(path)


def bundled_for_dataset(dataset_path: str) -> str | None:
    """The bundled token set standing for an SAE's dataset (registry token_sets[...].dataset_path)."""
    sets = registry()["token_sets"]
    return next((name for name, info in sets.items() if info.get("dataset_path") == dataset_path), None)


# -- resolving a source -------------------------------------------------------------------------


def open_array(name: str) -> TokenSet:
    """A bundled token set (its model's tokenizer) or a bare .npy (no tokenizer: a warning)."""
    tokens = np.asarray(open_token_set(name))
    bundled = registry()["token_sets"].get(name)
    if bundled is not None:
        model = bundled["model"]
        return TokenSet(tokens, name, bundled_tokenizer_fingerprint(model), f"bundled model {model!r}", None)
    warning = (
        f"token set {name!r} is a bare .npy: it does not say which tokenizer made it, so saegap cannot check "
        "it against the model's; pass text (--tokens my.txt) to have it checked"
    )
    return TokenSet(tokens, name, None, "unknown", None, warning)


def resolve_text(
    source: str, tokenizer: PreTrainedTokenizerBase, label: str, rule: TokenRule, column: str, limit: int | None,
    cache: TokenCache,
) -> TokenSet:  # fmt: skip
    """Tokenize (or read pre-tokenized rows of) a local file, a dataset dir or a Hub dataset, through `cache`."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = cache_key(source_fingerprint(source, limit), fingerprint, rule, column, limit)
    cached = cache.read(key)
    if cached is not None:
        tokens, meta = cached
        known = meta["tokenizer"]
        return TokenSet(tokens, source, known, label if known else "unknown", rule, meta.get("warning"))
    rows, pretokenized = rows_of(source, column, limit, rule)
    tokens = _pretokenized(rows, rule, limit) if pretokenized else tokenize_rows(rows, tokenizer, rule, limit)
    if len(tokens) == 0:
        raise BadInput(f"token source {source!r} gives no full row of {rule.context_size} tokens (is it empty?)")
    warning = f"token set {source!r} is pre-tokenized: nothing says which tokenizer made it" if pretokenized else None
    known = None if pretokenized else fingerprint
    cache.write(key, tokens, {"source": source, "tokenizer": known, "rule": rule.__dict__, "warning": warning})
    return TokenSet(tokens, source, known, label if known else "unknown", rule, warning)


def rows_of(source: str, column: str, limit: int | None, rule: TokenRule) -> tuple[Iterable[Any], bool]:
    """(the source's rows, whether they are token ids) from a file, a save_to_disk dir or the Hub."""
    path = Path(source)
    if path.suffix in TEXT_SUFFIXES and path.is_file():
        return _file_rows(path, column)
    if path.is_dir():
        return _dataset_rows(_load_from_disk(path), source, column)
    if path.suffix in TEXT_SUFFIXES or source.startswith((".", "/", "~")):
        raise BadInput(f"token source {source!r} does not exist")
    return _hub_rows(source, column, limit or STREAMED_SEQUENCES, rule)


def _file_rows(path: Path, column: str) -> tuple[list[Any], bool]:
    if path.suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        return ([text] if text.strip() else []), False
    if path.suffix == ".jsonl":
        try:
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise BadInput(f"{path} is not JSON lines: {one_line(error)}") from error
        columns = list(records[0]) if records and isinstance(records[0], dict) else []
        return _pick_column(records, columns, str(path), column)
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return _pick_column(table.to_pylist(), table.column_names, str(path), column)


def _pick_column(records: list[Any], columns: list[str], source: str, column: str) -> tuple[list[Any], bool]:
    if not records:
        raise BadInput(f"token source {source!r} is empty")
    if column in columns:
        return [r[column] for r in records], False
    token_column = next((c for c in TOKEN_COLUMNS if c in columns), None)
    if token_column is not None:
        return [r[token_column] for r in records], True
    raise _no_column(source, column, columns)


def _no_column(source: str, column: str, columns: list[str]) -> BadInput:
    either = " or ".join(TOKEN_COLUMNS)
    return BadInput(f"token source {source!r} has no column {column!r} (nor {either}); it has {columns}")


def _load_from_disk(path: Path) -> Any:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as error:  # not a save_to_disk directory, or a broken one
        raise BadInput(f"{path} is not a datasets.save_to_disk directory: {one_line(error)}") from error
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise BadInput(f"dataset {path} has splits {list(loaded)} but no 'train' (the split SAELens reads)")
        loaded = loaded["train"]
    return loaded


def _dataset_rows(dataset: Any, source: str, column: str) -> tuple[Iterable[Any], bool]:
    """Rows of a datasets.Dataset / IterableDataset, lazily: only as many as the rows need are read."""
    columns = list(dataset.column_names or [])
    if column in columns:
        return (row[column] for row in dataset), False
    token_column = next((c for c in TOKEN_COLUMNS if c in columns), None)
    if token_column is None:
        raise _no_column(source, column, columns)
    return (row[token_column] for row in dataset), True


def _hub_rows(name: str, column: str, limit: int, rule: TokenRule) -> tuple[Iterable[Any], bool]:
    """A Hub dataset's train split, streamed; offline (or unreachable) it is BadInput at once unless cached."""
    import datasets

    try:
        dataset = datasets.load_dataset(name, split="train", streaming=True)
    except Exception as error:  # offline, unreachable, no such dataset
        where = "offline (HF_HUB_OFFLINE=1)" if _offline() else "not readable from the Hugging Face Hub"
        raise BadInput(f"dataset {name!r} is {where}: {one_line(error)}; {_LOCAL_HINT}") from error
    return _dataset_rows(dataset, name, column)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


# -- text to rows -------------------------------------------------------------------------------


def tokenize_rows(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, rule: TokenRule, limit: int | None = None
) -> Int[np.ndarray, "seq pos"]:
    """Rows of `rule.context_size` ids, SAELens's way: documents tokenized without special tokens,
    concatenated with the separator, cut into rows that each start with BOS when prepend_bos."""
    bos = tokenizer.bos_token_id if rule.prepend_bos else None
    separator = _special_id(rule.separator, tokenizer)
    documents = (torch.tensor(_ids(text, tokenizer), dtype=torch.long) for text in texts)
    rows = concat_and_batch_sequences(
        (d for d in documents if len(d)), rule.context_size, begin_batch_token_id=bos,
        sequence_separator_token_id=separator, disable_concat_sequences=not rule.concat,
    )  # fmt: skip
    return _stack(_take(rows, limit), rule.context_size)


def _ids(text: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    if not isinstance(text, str):
        raise BadInput(f"the text column holds {type(text).__name__}, not text")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _special_id(separator: str | int | None, tokenizer: PreTrainedTokenizerBase) -> int | None:
    if separator is None or isinstance(separator, int):
        return separator
    return {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "sep": tokenizer.sep_token_id}[separator]


def _pretokenized(rows: Iterable[Any], rule: TokenRule, limit: int | None) -> Int[np.ndarray, "seq pos"]:
    """Pre-tokenized rows cut to the context size, as SAELens does (BOS already in them); shorter rows refused."""
    cut = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        if len(row) < rule.context_size:
            raise BadInput(f"pre-tokenized row {i} has {len(row)} tokens, under the context size {rule.context_size}")
        cut.append(torch.as_tensor(list(row[: rule.context_size]), dtype=torch.long))
    return _stack(iter(cut), rule.context_size)


def _take(rows: Iterator[torch.Tensor], limit: int | None) -> Iterator[torch.Tensor]:
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            return
        yield row


def _stack(rows: Iterator[torch.Tensor], context_size: int) -> Int[np.ndarray, "seq pos"]:
    arrays = [row.numpy().astype(np.int64) for row in rows]
    if not arrays:
        return np.zeros((0, context_size), dtype=np.int32)
    stacked = np.stack(arrays)
    return stacked.astype(np.int32 if stacked.max() < 2**31 else np.int64)


# -- the cache ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenCache:
    """Where one store's tokenized sets live, and the store whose token_sets table catalogues them."""

    root: Path
    store: StoreConfig

    @classmethod
    def of(cls, store: StoreConfig) -> TokenCache:
        """$SAEGAP_TOKEN_CACHE, else token_sets/ in the store's data directory (every worker of a deployment
        shares that directory, so all read the identical array)."""
        override = os.environ.get("SAEGAP_TOKEN_CACHE")
        return cls(Path(override) if override else store.data_dir / "token_sets", store)

    def read(self, key: str) -> tuple[Int[np.ndarray, "seq pos"], dict[str, Any]] | None:
        described = self.root / f"{key}.json"
        if not described.exists():
            return None
        return np.load(self.root / f"{key}.npy", allow_pickle=False), json.loads(described.read_text())

    def write(self, key: str, tokens: Int[np.ndarray, "seq pos"], meta: dict[str, Any]) -> None:
        """The array, then its description (a reader trusts only a complete pair), then the token_sets row."""
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        partial = root / f"{key}.{os.getpid()}.tmp.npy"
        np.save(partial, tokens)
        partial.replace(root / f"{key}.npy")
        meta = meta | {"shape": list(tokens.shape), "file": f"{key}.npy"}
        (root / f"{key}.json.tmp{os.getpid()}").write_text(json.dumps(meta, sort_keys=True))
        (root / f"{key}.json.tmp{os.getpid()}").replace(root / f"{key}.json")
        self._record(key, meta)

    def _record(self, key: str, meta: dict[str, Any]) -> None:
        """A row in the store's token_sets table (skipped, with a log line, when that store is not set up)."""
        from schema.tables import record_token_set

        try:
            record_token_set(self.store, key, meta["source"], meta)
        except Exception:  # the array is cached either way; the table is the catalogue of it
            log.warning("token set %s cached but not recorded in token_sets", key, exc_info=True)


def source_fingerprint(source: str, limit: int | None) -> str:
    """A local file's or directory's content hash; a Hub dataset's name and the rows read from it."""
    path = Path(source)
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    else:
        digest.update(f"hub:{source}:{limit or STREAMED_SEQUENCES}".encode())
    return digest.hexdigest()


def cache_key(source: str, tokenizer: str, rule: TokenRule, column: str, limit: int | None) -> str:
    payload = json.dumps([source, tokenizer, rule.__dict__, column, limit], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# -- a job's token set --------------------------------------------------------------------------


def source_name(spec_tokens: str | None, saes: list[SAE[Any]]) -> str:
    """What the job reads: its tokens, else the bundled set standing for the SAEs' dataset, else that dataset."""
    if spec_tokens is not None:
        return spec_tokens
    dataset = sae_dataset(saes)
    return bundled_for_dataset(dataset) or dataset


def is_array_name(name: str) -> bool:
    """A bundled set or a .npy path: taken as it is, checkable before any model loads."""
    return name in registry()["token_sets"] or Path(name).suffix == ".npy"


def job_token_set(
    spec_tokens: str | None, saes: list[SAE[Any]], model: Any, model_name: str, cache: TokenCache, *,
    text_column: str = "text", context_size: int | None = None, limit: int | None = None,
) -> TokenSet:  # fmt: skip
    """The job's token set, checked against the model's tokenizer (the guard); BadInput names any problem."""
    name = source_name(spec_tokens, saes)
    if is_array_name(name):
        token_set = _array_set(name, context_size)
    else:
        rule = sae_rule(saes, context_size, model.cfg.n_ctx)
        label = f"model {model_name!r}"
        token_set = resolve_text(name, model.tokenizer, label, rule, text_column, limit, cache)
    check_tokenizer(token_set, model.tokenizer, model_name)
    if token_set.warning:
        log.warning("%s", token_set.warning)
    return token_set


def _array_set(name: str, context_size: int | None) -> TokenSet:
    """A bundled set or .npy; a context_size other than its row length is refused (its rows are cut already)."""
    token_set = open_array(name)
    width = token_set.tokens.shape[1]
    if context_size is not None and context_size != width:
        raise BadInput(f"context_size {context_size} applies to text; token set {name!r} has rows of {width} tokens")
    return token_set
