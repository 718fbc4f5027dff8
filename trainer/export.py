"""`adswap export`: a trained model as a self-contained folder another program loads
without the run, the training config or adswap's trainer state.

  model.safetensors   the trainable weights only (projection heads, the trained audio
                      encoder or the layer mix of a frozen one, the logit scale), under
                      adswap's own module names
  config.json         the model config, the frozen encoders by name and revision, sample
                      rate, clip length, tokenizer settings, embedding size, and where
                      the weights came from (run, checkpoint and its sha256)
  README.md           the model card: usage, encoders, training, evaluation, data card

Frozen encoders are never copied: `load_model` builds them by name (and checks their
revision), then loads our weights. So loading does not depend on how a transformers
version names the frozen models' parameters. (An `htsat` audio encoder is trained, so
its weights are in the file under transformers' ClapAudioModel names.)

    from adswap import load_model
    m = load_model("export/")
    m.embed_text(["warm jazz piano trio"])      # [1, dim]
    m.embed_audio(samples, 44100)               # [dim]: the whole track, pooled

A kind-clap run exports as a transformers ClapModel folder instead (save_pretrained,
with its ClapProcessor), which `transformers.ClapModel.from_pretrained` loads without
adswap; adswap's own facts go in adswap.json beside it, and `load_model` takes it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from schemas.atomic import atomic_path, write_text_atomic
from schemas.config import ConfigError, config_from_dict
from trainer.config import ExportConfig, ModelConfig
from trainer.inference import Encoder
from trainer.revision import encoder_revision

# 2: the model section has a settings section per audio encoder (model.audio.cnn)
FORMAT = "adswap-model/2"
WEIGHTS = "model.safetensors"
# a kind-clap export is a transformers ClapModel folder, whose config.json is transformers'
CLAP_METADATA = "adswap.json"


def _frozen_encoders(config: ModelConfig) -> dict:
    encoders = {"text": {"name": config.text.path, "revision": encoder_revision(
        config.text.path)}}
    if config.audio.encoder.frozen_weights:
        encoders["audio"] = {"name": config.audio.path,
                             "revision": encoder_revision(config.audio.path)}
    return encoders


def export(config: ExportConfig) -> Path:
    from trainer.config import load_config

    out = Path(config.out)
    earlier = (out / "config.json").exists()
    if out.exists() and any(out.iterdir()) and not (earlier and config.overwrite):
        raise ValueError(f"{out} is not empty; choose a new --out"
                         + (" or pass --overwrite to replace the export in it" if earlier
                            else ""))
    encoder = Encoder.from_run(config.run, config.checkpoint, "cpu")
    model = encoder.model
    train_config = load_config(Path(config.run) / "config.yaml")
    checkpoint = Path(config.run) / "checkpoints" / encoder.identity["checkpoint"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True).get("state", {})
    clap = model.config.kind == "clap"
    trained = _save_clap(model, out) if clap else _save_weights(model, out)
    body = {
        "format": FORMAT,
        "kind": model.config.kind,
        "embedding_dim": model.dim,
        "sample_rate": model.config.audio.sample_rate,
        "clip_seconds": model.config.audio.clip_seconds,
        "tokenizer": {"name": "this folder's" if clap else model.config.text.path,
                      "max_length": model.config.text.max_length},
        "encoders": {} if clap else _frozen_encoders(model.config),
        "model": json.loads(json.dumps(dataclasses.asdict(model.config))),
        "source": {**encoder.identity, "epoch": state.get("epoch"), "step": state.get("step")},
        "weights_sha256": hashlib.sha256((out / WEIGHTS).read_bytes()).hexdigest(),
        "trainable_parameters": trained,
    }
    write_text_atomic(out / (CLAP_METADATA if clap else "config.json"),
                      json.dumps(body, indent=1))
    write_text_atomic(out / "README.md", model_card(body, train_config, config))
    return out


def _save_weights(model, out: Path) -> int:
    """Kind duet: the trainable weights under adswap's names; their count."""
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(weights, str(tmp), metadata={"format": FORMAT})
    return int(sum(v.numel() for v in weights.values()))


def _save_clap(model, out: Path) -> int:
    """Kind clap: a transformers ClapModel folder with its processor (save_pretrained),
    each file moved into place whole; the count of the parameters training updated."""
    import os
    import shutil

    from transformers import ClapProcessor

    staging = out / f".export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.export_model().save_pretrained(staging)
    ClapProcessor.from_pretrained(model.config.clap.path).save_pretrained(staging)
    for file in sorted(staging.iterdir()):
        os.replace(file, out / file.name)
    staging.rmdir()
    return int(sum(p.numel() for p in model.trainable_parameters()))


def load_model(folder: str | Path, device: str = "cpu") -> Encoder:
    """An exported model, ready to embed texts and audio."""
    from safetensors.torch import load_file

    from trainer.inference import resolve_device
    from trainer.model import build_model

    folder = Path(folder)
    body = _read_config(folder)
    if body.get("kind") == "clap":  # the folder is the model, its weights the trained ones
        model_config = _model_config(body["model"], folder)
        model = build_model(dataclasses.replace(model_config, clap=dataclasses.replace(
            model_config.clap, path=str(folder))))
    else:
        model = _duet_model(folder, body, load_file, build_model)
    identity = {"run": body["source"].get("run"), "checkpoint": body["source"].get("checkpoint"),
                "checkpoint_sha256": body["source"]["checkpoint_sha256"],
                "export": str(folder.resolve())}
    return Encoder(model.to(resolve_device(device)), identity)


def _duet_model(folder: Path, body: dict, load_file, build_model):
    model_config = _model_config(body["model"], folder)
    for role, entry in body["encoders"].items():
        here = encoder_revision(entry["name"])
        if entry["revision"] and here and here != entry["revision"]:
            raise ValueError(f"{folder} was exported with the {role} encoder {entry['name']} "
                             f"at {entry['revision']}, but here it is {here}; install that "
                             "version, or the embeddings would not match the trained heads")
    model = build_model(model_config)
    weights = load_file(str(folder / WEIGHTS))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    needed = set(model.trainable_state())
    if unexpected or [k for k in missing if k in needed]:
        raise ValueError(f"{folder / WEIGHTS} does not fit the model in its config.json "
                         f"(missing {[k for k in missing if k in needed][:3]}, unexpected "
                         f"{unexpected[:3]}); export it again with this adswap version")
    return model


def _read_config(folder: Path) -> dict:
    path = folder / CLAP_METADATA
    if not path.exists():
        path = folder / "config.json"
    if not path.exists() or not (folder / WEIGHTS).exists():
        raise ValueError(f"{folder} is not an exported model (it needs config.json and "
                         f"{WEIGHTS}); make one with `adswap export RUN --out DIR`")
    body = json.loads(path.read_text(encoding="utf-8"))
    if body.get("format") != FORMAT:
        raise ValueError(f"{path} has format {body.get('format')!r}; this version reads "
                         f"'{FORMAT}' (export it again)")
    return body


def _model_config(model: dict, folder: Path) -> ModelConfig:
    try:
        return config_from_dict(ModelConfig, model, str(folder / "config.json"))
    except ConfigError as err:
        raise ValueError(f"{err}\nthe model section does not fit this adswap version; "
                         "export it again") from err


def model_card(body: dict, train_config, config: ExportConfig) -> str:
    source = body["source"]
    head = _clap_card(body) if body["kind"] == "clap" else _duet_card(body)
    lines = [
        "---", "library_name: " + ("transformers" if body["kind"] == "clap" else "adswap"),
        "tags:", "- music", "- text-to-music-retrieval", "- audio-retrieval", "- clap",
        "pipeline_tag: feature-extraction", "---", "", *head,
        "## Training", "",
        f"Run `{source['run']}`, checkpoint `{source['checkpoint']}` (sha256 "
        f"`{source['checkpoint_sha256'][:16]}`), epoch {source['epoch']}, step "
        f"{source['step']}. Shards `{train_config.data.shards}`; p_cap "
        f"{train_config.data.p_cap}, View Dropout {train_config.data.view_dropout}, TextSwap "
        f"{train_config.swap.enabled}; batch {train_config.data.batch_size} x "
        f"{train_config.data.accumulate}, lr {train_config.optim.lr}.", "",
        "## Evaluation", "", *_eval_lines(Path(config.run), source["checkpoint_sha256"]), "",
        "## Data", "",
        f"Data card: [{config.card}]({Path(config.card).resolve().as_uri()})" if config.card
        else "No data card was given at export (`adswap export --card data_cards/<dataset>/"
             "README.md`).", "",
        "## Limitations", "",
        "Retrieval quality is what the evaluation above measured on its sets, no more: the "
        "model knows the tags and caption styles it was trained on, and a text encoder "
        "trained on English understands little else.", ""]
    return "\n".join(lines)


def _duet_card(body: dict) -> list[str]:
    model = body["model"]
    text = body["encoders"]["text"]
    audio = body["encoders"].get("audio")
    audio_line = f"frozen `{audio['name']}` ({audio['revision'] or 'revision unknown'}) " \
        "with a trained layer mix" if audio else f"`{model['audio']['kind']}`, trained"
    return [
        f"# DuET-MC music-text model ({Path(body['source']['run']).name})", "",
        "A dual encoder that maps music and text into one space (cosine similarity): "
        "a text encoder and an audio encoder, each followed by a trained 2-layer "
        "Transformer projection with a [CLS] token, trained with InfoNCE on LLM captions "
        "of tagged music (Augment, Drop & Swap, ISMIR 2024). Made with adswap.", "",
        "## Use", "", "```python", "from adswap import load_model", "",
        'm = load_model("path/to/this/folder")',
        'texts = m.embed_text(["a calm jazz piano trio", "aggressive metal guitars"])',
        "track = m.embed_audio(samples, sample_rate)  # mono or [frames, channels]",
        "scores = texts @ track  # cosine similarities", "```", "",
        *_windows_line(body),
        "## Model", "",
        "| | |", "|---|---|",
        f"| embedding size | {body['embedding_dim']} |",
        f"| text encoder | {'trained' if model['text']['trainable'] else 'frozen'} "
        f"`{text['name']}` ({text['revision'] or 'revision unknown'}), "
        f"max {body['tokenizer']['max_length']} tokens |",
        f"| audio encoder | {audio_line} |",
        f"| audio input | {body['sample_rate']} Hz mono, {body['clip_seconds']:g} s windows |",
        f"| projection | {model['layers']} layers, {model['heads']} heads |",
        f"| temperature | {model['temperature']} |",
        f"| trained parameters | {body['trainable_parameters']:,} (in {WEIGHTS}) |", ""]


def _clap_card(body: dict) -> list[str]:
    model = body["model"]
    return [
        f"# Fine-tuned CLAP music-text model ({Path(body['source']['run']).name})", "",
        f"A CLAP model (`{model['clap']['path']}`) fine-tuned with InfoNCE on LLM captions "
        "of tagged music (Augment, Drop & Swap, ISMIR 2024), saved as a transformers "
        "`ClapModel` with its processor. Made with adswap.", "",
        "## Use", "", "```python", "from transformers import ClapModel, ClapProcessor", "",
        'model = ClapModel.from_pretrained("path/to/this/folder")',
        'processor = ClapProcessor.from_pretrained("path/to/this/folder")',
        'text = processor(text=["a calm jazz piano trio"], return_tensors="pt", padding=True)',
        f"audio = processor(audio=[clip], sampling_rate={body['sample_rate']}, "
        'return_tensors="pt")',
        "t = model.get_text_features(**text).pooler_output",
        "a = model.get_audio_features(**audio).pooler_output", "```", "",
        "or `adswap.load_model(folder)`, which embeds whole tracks of any length and rate:",
        "", *_windows_line(body),
        "## Model", "", "| | |", "|---|---|",
        f"| embedding size | {body['embedding_dim']} |",
        f"| started from | `{model['clap']['path']}` |",
        f"| audio tower | {'trained' if model['clap']['train_audio'] else 'frozen'} |",
        f"| text tower | {'trained' if model['text']['trainable'] else 'frozen'}, max "
        f"{body['tokenizer']['max_length']} tokens in training |",
        f"| audio input | {body['sample_rate']} Hz mono, {body['clip_seconds']:g} s windows |",
        "| temperature | " + ("learned" if model["learn_temperature"] else
                              "the checkpoint's, fixed") + " |",
        f"| trained parameters | {body['trainable_parameters']:,} |", ""]


def _windows_line(body: dict) -> list[str]:
    return ["`embed_audio` resamples to the model's rate, cuts the track into "
            f"{body['clip_seconds']:g} s windows and returns the normalised mean of their "
            "embeddings.", ""]


def _eval_lines(run: Path, checkpoint_sha: str) -> list[str]:
    report_file = run / "eval" / "report.json"
    if not report_file.exists():
        return ["Not evaluated yet (`adswap eval RUN --set ...`)."]
    report = json.loads(report_file.read_text(encoding="utf-8"))
    if not checkpoint_sha.startswith(report.get("checkpoint_sha256", "-")):
        return ["The run's evaluation report is for another checkpoint; evaluate this one "
                "(`adswap eval --checkpoint ...`)."]
    lines = [f"Text-to-music retrieval ({report['protocol']['subsets']} random subsets of "
             f"{report['protocol']['subset_size']} tracks; mean ± std):", "",
             "| set | language | R@1 | R@5 | R@10 | MR | tracks |", "|---|---|---|---|---|---|---|"]
    for name, entry in report["sets"].items():
        for language, m in entry["languages"].items():
            cells = [f"{m[f't2m_{k}']['mean']:.1f} ± {m[f't2m_{k}']['std']:.1f}"
                     for k in ("R@1", "R@5", "R@10", "MR")]
            lines.append(f"| {name} | {language} | " + " | ".join(cells) +
                         f" | {entry['tracks']} |")
    return lines
