"""Write models/registry.json (paths relative to models/) from the release list in common.py."""

from scripts.demo.common import (
    HELDOUT_TOKENS_PATH,
    MODEL_CONFIG,
    MODEL_DIR,
    MODELS_DIR,
    REGISTRY_PATH,
    RELEASES,
    SAES_DIR,
    write_json,
)


def registry() -> dict[str, dict[str, dict]]:
    releases = {
        release: {
            "model": "demo",
            "path": str((SAES_DIR / release).relative_to(MODELS_DIR)),
            "saes": spec.hook_names(MODEL_CONFIG["n_layers"]),
        }
        for release, spec in RELEASES.items()
    }
    return {
        "models": {"demo": {"path": str(MODEL_DIR.relative_to(MODELS_DIR))}},
        "releases": releases,
        "token_sets": {"demo": {"model": "demo", "path": str(HELDOUT_TOKENS_PATH.relative_to(MODELS_DIR))}},
    }


def main() -> None:
    write_json(REGISTRY_PATH, registry())


if __name__ == "__main__":
    main()
