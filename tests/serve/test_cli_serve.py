"""`cambrian serve` as a user starts it: a real process, the printed URL, /health, the openai client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from typer.testing import CliRunner

from cambrian.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_serve_process_prints_url_answers_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "cambrian.cli", "serve", "tiny", "--random", "--port", "0", "--max-batch", "2",
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["tiny", "--random", "--allow-dir", "{tmp}/nope"], "--allow-dir {tmp}/nope is not a directory"),
        (["no-such-model"], "no-such-model is neither a model directory nor a preset id (cambrian-13b, "),
        (
            ["tiny"],
            "tiny is a preset with random weights; pass --random to build it, or give a model directory",
        ),
        (["cambrian-8b"], "cambrian-8b is a preset with random weights; pass --random to build it"),
        (["{tmp}/runs/mdoel"], "no such directory: {tmp}/runs/mdoel; did you mean {tmp}/runs/model?"),
        (
            ["tiny", "--random", "--quantize", "int3"],
            "quantize mode 'int3' is not supported; valid: int8, nf4",
        ),
        (
            ["tiny", "--random", "--default-max-tokens", "10", "--max-tokens-limit", "5"],
            "--default-max-tokens 10 >",
        ),
        (["tiny", "--random", "--max-batch", "0"], "--max-batch must be >= 1, got 0"),
        (["tiny", "--random", "--max-body-mb", "0"], "--max-body-mb must be >= 0.001, got 0.0"),
        (["tiny", "--random", "--max-images", "-1"], "--max-images must be >= 0, got -1"),
        (["tiny", "--random", "--tower-path", "siglip"], "--tower-path 'siglip' is not of the form NAME=DIR"),
    ],
)
def test_serve_bad_options_are_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "runs" / "model").mkdir(parents=True)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = CliRunner().invoke(app, ["serve", *args])
    assert out.exit_code == 2, out.output
    err = out.stderr.strip()
    assert "\n" not in err and "Traceback" not in out.output, out.output
    assert err.startswith("error: " + message.replace("{tmp}", str(tmp_path))), err


def test_serve_help_lists_the_limits():
    text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for opt in ("--max-batch", "--max-queue", "--max-body-mb", "--max-images", "--max-pixels",
                "--max-tokens-limit", "--allow-dir", "--api-key", "--allow-remote-images", "--quantize", "--ui"):  # fmt: skip
        assert opt in text
