"""Models, SAEs and datasets from the Hugging Face Hub, and local transformers checkpoints, tested offline.

A tiny random GPT-2-architecture model and a tiny SAE are written into a temporary Hugging Face
cache in the Hub's own layout (models--<org>--<name>/snapshots/<revision>/..., refs/main), under
names that exist: the model `gpt2` (TransformerLens's `gpt2-small`) and the SAELens release
`gpt2-small-res-jb` (repo jbloom/GPT2-Small-SAEs-Reformatted). The SAE's metadata names its
training dataset, `Skylion007/openwebtext`, as the release's does; a tiny text dataset stands in
for it, left where `datasets.load_dataset` leaves a Hub dataset: its file in the Hub cache
(datasets--Skylion007--openwebtext/snapshots/<revision>/data/train.jsonl) and, prepared from that
file by datasets' own JSON builder, its Arrow table in datasets' cache
(<HF_DATASETS_CACHE>/Skylion007___openwebtext/default/0.0.0/<revision>/).

Offline, datasets 5.2 resolves a Hub name only through that second cache: `dataset_module_factory`
raises at once when HF_HUB_OFFLINE is set (before it looks at the Hub cache) and falls back to
`CachedDatasetModuleFactory`, which streams the prepared Arrow table (tried: a snapshot with
refs/main alone, even with a README naming its data files, is "Couldn't reach ... on the Hub").

`saegap evaluate --model gpt2-small --sae gpt2-small-res-jb/blocks.0.hook_resid_pre` then runs
under HF_HUB_OFFLINE=1 through the real HookedTransformer.from_pretrained_no_processing,
SAE.from_pretrained and datasets.load_dataset(..., streaming=True) of the SAE's dataset_path:
nothing is mocked, only the caches' contents are small.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.file_download import repo_folder_name
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from safetensors.torch import save_file
from sqlalchemy import select
from sqlalchemy.orm import Session
from transformers import GPT2Config, GPT2LMHeadModel

from schema.config import StoreConfig
from schema.read import query
from schema.store import Store
from schema.tables import TokenSetEntry
from tests.worker.conftest import BOS, CONTEXT, VOCAB, _tokenizer_dir, random_tokens, tiny_sae
from worker import loading
from worker.errors import BadInput

RELEASE = "gpt2-small-res-jb"
SAE_ID = "blocks.0.hook_resid_pre"
MODEL_NAME = "gpt2-small"  # the release's model; TransformerLens's alias of the Hub repo `gpt2`
DATASET = "Skylion007/openwebtext"  # the release's training dataset (its SAEs' metadata.dataset_path)
SAE_CONTEXT = 16  # the tiny SAE's metadata.context_size (the model's n_ctx is CONTEXT = 24)
REVISION = "0" * 40
TEXTS = [f"t{1 + 7 * i % 63}" for i in range(64)]  # one word, one token each (the tiny tokenizer's words)


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """A random GPT-2 with the tiny tokenizer's vocabulary (2 layers, width 32).

    n_ctx is set as in the Hub's gpt2 config.json: TransformerLens reads it for GPT-2.
    """
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_ctx=CONTEXT, n_embd=32, n_layer=2, n_head=4, bos_token_id=BOS,
        eos_token_id=BOS,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def save_checkpoint(model: GPT2LMHeadModel, path: Path) -> Path:
    """What a fine-tuning run leaves: save_pretrained's model files plus the tokenizer's."""
    model.save_pretrained(path)
    for item in Path(_tokenizer_dir()).iterdir():
        shutil.copy(item, path / item.name)
    return path


def hub_snapshot(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    """The snapshot folder of `repo_id` in a Hub cache, with refs/main pointing at it (huggingface_hub's layout)."""
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def write_hub_cache(cache: Path) -> None:
    """The tiny model as the Hub repo `gpt2` and the tiny SAE as gpt2-small-res-jb's first SAE."""
    release = get_pretrained_saes_directory()[RELEASE]
    assert release.model == MODEL_NAME
    save_checkpoint(tiny_gpt2(), hub_snapshot(cache, "gpt2"))
    sae = tiny_sae(SAE_ID, 32, seed=3)
    sae.cfg.metadata.model_name = MODEL_NAME
    meta = sae.cfg.metadata
    meta.dataset_path, meta.context_size, meta.prepend_bos = DATASET, SAE_CONTEXT, True  # as the release's cfg.json
    folder = hub_snapshot(cache, release.repo_id) / release.saes_map[SAE_ID]
    sae.save_model(folder)
    save_file({"sparsity": torch.zeros(sae.cfg.d_sae)}, str(folder / "sparsity.safetensors"))


def write_dataset_cache(hub: Path, datasets_cache: Path) -> None:
    """TEXTS as the Hub dataset DATASET, where load_dataset leaves one: the file in the Hub cache's snapshot,
    and the Arrow table datasets' JSON builder prepares from it in datasets' cache (what offline reads)."""
    from datasets.packaged_modules.json.json import Json

    data = hub_snapshot(hub, DATASET, repo_type="dataset") / "data" / "train.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS))
    org, name = DATASET.split("/")
    staging = datasets_cache.parent / "staging"
    builder = Json(cache_dir=str(staging), dataset_name=name, config_name="default", config_id="default",
                   hash=REVISION, data_files={"train": [str(data)]})  # fmt: skip
    builder.download_and_prepare()
    _, config, version, revision = Path(builder.cache_dir).relative_to(staging).parts  # name/config/version/hash
    prepared = datasets_cache / f"{org}___{name}" / config / version
    prepared.mkdir(parents=True)
    shutil.move(builder.cache_dir, prepared / revision)


def offline_env(cache: Path, data: Path, datasets_cache: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SAEGAP_BROKER_URL", "SAEGAP_DATABASE_URL")}
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env = env | offline | {"HF_HUB_CACHE": str(cache), "SAEGAP_DATA": str(data)}
    return env | ({"HF_DATASETS_CACHE": str(datasets_cache)} if datasets_cache else {})


def first_row(tokenizer_dir: str) -> list[int]:
    """The first row SAELens's rule makes of TEXTS: BOS, then each text's ids, texts joined by BOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stream = [id_ for text in TEXTS for id_ in [BOS, *tokenizer(text, add_special_tokens=False)["input_ids"]]]
    return stream[:SAE_CONTEXT]


def test_saegap_evaluate_runs_a_hub_model_release_and_its_dataset_offline(tmp_path: Path) -> None:
    cache, datasets_cache, data = tmp_path / "hub", tmp_path / "datasets", tmp_path / "data"
    write_hub_cache(cache)
    write_dataset_cache(cache, datasets_cache)
    saegap = str(Path(sys.executable).with_name("saegap"))
    flags = ["--model", MODEL_NAME, "--sae", f"{RELEASE}/{SAE_ID}", "--n-sequences", "4", "--device", "cpu"]
    result = subprocess.run(
        [saegap, "evaluate", *flags], env=offline_env(cache, data, datasets_cache), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Store.open(StoreConfig(data_dir=data)) as store:
        (job,) = store.list_jobs()
        found = query(
            "SELECT count(*) AS n, avg(kl) AS kl FROM token_records WHERE job_id = $job", {"job": job.id}, store=store
        ).to_pylist()[0]
        first = query("SELECT token_id FROM tokens WHERE sequence = 0 ORDER BY position", store=store).to_pylist()
        with Session(store.engine) as session:
            (token_set,) = session.scalars(select(TokenSetEntry)).all()
    assert job.status == "done" and job.spec.saes == [f"{RELEASE}/{SAE_ID}"] and job.spec.tokens is None  # its dataset
    assert token_set.source == DATASET and token_set.meta["rule"]["context_size"] == SAE_CONTEXT
    assert token_set.meta["tokenizer"] and token_set.meta["shape"] == [4, SAE_CONTEXT]
    assert [row["token_id"] for row in first] == first_row(str(hub_snapshot(cache, "gpt2")))
    assert job.warnings == []  # text tokenized by the model's own tokenizer: nothing unchecked
    # Every other position is BOS (each one-token text follows one), and special tokens are not intervened on.
    assert found["n"] == 4 * (SAE_CONTEXT // 2) * len(job.spec.interventions)
    assert np.isfinite(found["kl"]) and found["kl"] > 0


def test_a_hub_name_offline_is_one_clear_error(tmp_path: Path) -> None:
    """Offline with an empty cache: the job fails with one line naming the problem, and no records."""
    cache, data = tmp_path / "empty-hub", tmp_path / "data"
    cache.mkdir()
    np.save(tmp_path / "tokens.npy", random_tokens(4, seed=7).numpy())
    saegap = str(Path(sys.executable).with_name("saegap"))
    flags = ["--model", MODEL_NAME, "--sae", f"{RELEASE}/{SAE_ID}", "--tokens", str(tmp_path / "tokens.npy")]
    result = subprocess.run(
        [saegap, "evaluate", *flags, "--device", "cpu"], env=offline_env(cache, data), capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr[-3000:]
    failure = result.stderr.strip().splitlines()[-1]
    assert failure.startswith("saegap: job 1 failed: SAE gpt2-small-res-jb/blocks.0.hook_resid_pre is not in the")
    assert "HF_HUB_OFFLINE=1" in failure and "Traceback" not in result.stderr
    with Store.open(StoreConfig(data_dir=data)) as store:
        assert query("SELECT count(*) AS n FROM tokens", store=store).to_pylist() == [{"n": 0}]


def test_a_local_transformers_checkpoint_gives_the_same_log_probs(tmp_path: Path) -> None:
    hf_model = tiny_gpt2(seed=1)
    path = save_checkpoint(hf_model, tmp_path / "finetuned-gpt2")
    assert loading.is_hf_checkpoint(path)
    model = loading.load_model(str(path), "cpu", "float32", {})
    tokens = random_tokens(3, seed=2)
    with torch.inference_mode():
        ours = torch.log_softmax(model(tokens).double(), dim=-1)
        theirs = torch.log_softmax(hf_model(tokens).logits.double(), dim=-1)
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 32 and model.cfg.original_architecture == "GPT2LMHeadModel"
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)
    assert model.tokenizer.convert_tokens_to_ids("t5") == 5  # the checkpoint's own tokenizer


def test_a_broken_transformers_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(BadInput, match="cannot load the transformers checkpoint"):
        loading.load_model(str(path), "cpu", "float32", {})
