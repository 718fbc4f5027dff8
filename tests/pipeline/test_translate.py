"""Eval captions translated through the caption stage's engine (an OpenAI-compatible
server here), then imported as a multilingual eval set."""

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from adswap.cli import app
from tests.pipeline.captions.test_openai_engine import Server


def translator(calls, body):
    prompt = body["messages"][-1]["content"]
    language, text = prompt.split(":\n", 1)
    if "broken" in text:
        return 500, {"error": "boom"}
    name = language.rsplit(" ", 1)[-1]
    return 200, {"choices": [{"message": {"content": f"[{name}] {text}"},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 5, "completion_tokens": 5}}


@pytest.fixture
def server():
    running = Server(translator)
    yield running
    running.close()


def test_translations_are_added_per_language_and_failures_counted(server, tmp_path):
    source = tmp_path / "captions.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in [
        {"track_id": "a", "audio": "a.flac", "caption": "a calm piano piece"},
        {"track_id": "b", "audio": "b.flac", "caption": "broken on purpose"},
        {"track_id": "c", "audio": "c.flac", "caption": "ein Lied", "language": "de"},
    ]) + "\n")
    out = tmp_path / "translated.parquet"
    result = CliRunner().invoke(app, ["translate-captions", "--file", str(source), "--out",
                                      str(out), "--languages", "de,fr", "--engine", "openai",
                                      "--url", server.url])
    assert result.exit_code == 0, result.output
    assert "2 captions, 2 translations, failed: error 2" in result.output
    rows = pq.read_table(out).to_pylist()
    added = rows[3:]
    assert [(r["track_id"], r["language"], r["caption"]) for r in added] == [
        ("a", "de", "[German] a calm piano piece"), ("a", "fr", "[French] a calm piano piece")]
    assert rows[:3][2]["caption"] == "ein Lied"  # originals kept, other languages untouched


def test_bad_languages_and_the_template_engine_are_refused(tmp_path):
    result = CliRunner().invoke(app, ["translate-captions", "--file", str(tmp_path / "x.csv"),
                                      "--out", str(tmp_path / "y.csv"), "--languages", "xx"])
    assert result.exit_code == 1 and "languages: 'xx' unknown" in result.output
    result = CliRunner().invoke(app, ["translate-captions", "--file", str(tmp_path / "x.csv"),
                                      "--out", str(tmp_path / "y.csv"), "--engine", "template"])
    assert result.exit_code == 1 and "cannot translate" in result.output
