"""`cambrian serve` as a user starts it: a real process, the printed URL, /health, the openai client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from openai import OpenAI
from typer.testing import CliRunner

from cambrian.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_serve_process_prints_url_answers_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "cambrian.cli", "serve", "tiny", "--port", "0", "--max-batch", "2",
           "--name", "tiny-test", "--api-key", "k"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
    )
    try:
        for line in proc.stdout:
            if m := re.search(r"Serving tiny-test at (http://127\.0\.0\.1:\d+) ", line):
                break
        else:
            raise AssertionError("no URL printed")
        url = m.group(1)
        assert httpx.get(f"{url}/health").json()["model"] == "tiny-test"
        client = OpenAI(base_url=f"{url}/v1", api_key="k")
        assert [m.id for m in client.models.list().data] == ["tiny-test"]
        r = client.chat.completions.create(model="tiny-test", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=3, temperature=0)  # fmt: skip
        assert r.usage.completion_tokens >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it.
    assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in rest, rest


def test_serve_bad_options_exit_2(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["serve", "tiny", "--allow-dir", str(tmp_path / "nope")])
    assert out.exit_code == 2 and "is not a directory" in out.output
    out = runner.invoke(app, ["serve", "no-such-model"])
    assert out.exit_code == 2 and "tiny" in out.output  # names the presets
    out = runner.invoke(app, ["serve", "tiny", "--quantize", "int3"])
    assert out.exit_code == 2 and "int8" in out.output
    out = runner.invoke(app, ["serve", "tiny", "--default-max-tokens", "10", "--max-tokens-limit", "5"])
    assert out.exit_code == 2


def test_serve_help_lists_the_limits():
    text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for opt in ("--max-batch", "--max-queue", "--max-body-mb", "--max-images", "--max-pixels",
                "--max-tokens-limit", "--allow-dir", "--api-key", "--allow-remote-images", "--quantize", "--ui"):  # fmt: skip
        assert opt in text
