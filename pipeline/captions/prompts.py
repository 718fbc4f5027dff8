"""Few-shot prompt templates: versioned files with an id and a content hash.

The hash of the template file goes on every view it produced, so a changed prompt is
detected and regenerates exactly the views written with the old one.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from schemas.languages import LANGUAGES  # captions are written in any of them

TEMPLATE_DIR = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = "caption-v1"
MAX_TAG_CHARS = 64
MAX_TAGS_PER_CATEGORY = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Template:
    template_id: str
    content_hash: str
    system: str
    shots: tuple[tuple[str, str], ...]   # (query text, caption)
    query: str
    language: str

    @functools.cached_property
    def prefix(self) -> tuple[dict, ...]:
        """System text and examples: identical for every request, so cached by the engine."""
        messages = [{"role": "system", "content": self.system}]
        for query, caption in self.shots:
            messages.append({"role": "user", "content": query})
            messages.append({"role": "assistant", "content": caption})
        return tuple(messages)

    def messages(self, tags: Mapping[str, Sequence[str]], language: str) -> list[dict]:
        """Chat messages: the shared prefix first, the track's query last."""
        text = self.query.format(tags=format_tags(tags))
        if language != "en":
            text += " " + self.language.format(language=LANGUAGES[language].name)
        return [*self.prefix, {"role": "user", "content": text}]


@functools.lru_cache(maxsize=65536)  # catalogs repeat the same few thousand tags
def sanitise_tag(tag: str) -> str:
    """Catalogs are user data: no control characters, no runaway lengths in a prompt."""
    clean = " ".join(_CONTROL.sub(" ", tag).split())
    return clean[:MAX_TAG_CHARS].strip()


def format_tags(tags: Mapping[str, Sequence[str]]) -> str:
    parts = []
    for category, values in tags.items():
        clean = [t for t in (sanitise_tag(v) for v in values[:MAX_TAGS_PER_CATEGORY]) if t]
        if clean:
            parts.append(f"{category}: {', '.join(clean)}")
    return "; ".join(parts)


def load_template(name_or_path: str) -> Template:
    """A bundled template by id (e.g. 'caption-v1') or a path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TEMPLATE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        bundled = sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))
        raise ValueError(f"prompt template {name_or_path!r} not found; bundled: {bundled}, "
                         "or give a path to a .yaml file")
    raw = path.read_bytes()
    try:
        body = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    problems = [f"'{key}' is missing" for key in ("id", "system", "shots", "query", "language")
                if not isinstance(body, dict) or key not in body]
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    if "{tags}" not in body["query"] or "{language}" not in body["language"]:
        raise ValueError(f"{path}: 'query' needs {{tags}} and 'language' needs {{language}}")
    shots = []
    for i, shot in enumerate(body["shots"]):
        if not isinstance(shot, dict) or not isinstance(shot.get("tags"), dict) \
                or not isinstance(shot.get("caption"), str):
            raise ValueError(f"{path}: shots[{i}] needs 'tags' (category -> list) and 'caption'")
        shots.append((body["query"].format(tags=format_tags(shot["tags"])), shot["caption"]))
    return Template(template_id=str(body["id"]),
                    content_hash=hashlib.sha256(raw).hexdigest()[:16],
                    system=body["system"].strip(), shots=tuple(shots), query=body["query"],
                    language=body["language"])
