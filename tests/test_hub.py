"""Hub push (model card, file selection, a commit to a local fake Hub, unreachable Hub) and pull (from the local cache)."""

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import UNNORM_KEY

from prismatic.policy.checkpoints import CheckpointError
from prismatic.policy.hub import files_to_upload, model_card, push_checkpoint
from prismatic.policy.inference import load_inference_policy, predict_action_chunk

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint plus what a training run folder also holds."""
    folder = tmp_path_factory.mktemp("run") / "tiny-policy"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "training_state.pt").write_bytes(b"optimizer state")
    (folder / "base_model").mkdir()
    (folder / "base_model" / "model.safetensors").write_bytes(b"base weights")
    (folder / "lora_adapter").mkdir()
    (folder / "lora_adapter" / "adapter_config.json").write_text("{}")
    return folder


def test_upload_selection_keeps_what_loads_and_leaves_training_state(checkpoint):
    names = [str(p) for p in files_to_upload(checkpoint)]
    assert "config.json" in names and "model.safetensors" in names and "dataset_statistics.json" in names
    assert any(n.startswith("action_head--") for n in names) and "lora_adapter/adapter_config.json" in names
    assert "training_state.pt" not in names and not any(n.startswith("base_model") for n in names)


def test_model_card_describes_the_checkpoint(checkpoint):
    card = model_card(checkpoint, "someone/tiny-lightvla")
    assert card.startswith("---\n") and "pipeline_tag: robotics" in card
    assert "| images per observation | 2 |" in card and "| proprio | yes |" in card
    assert f"`{UNNORM_KEY}`" in card and "LightVLA pruner" in card and "4 layers, width 128" in card
    assert 'load_policy("someone/tiny-lightvla")' in card


def test_push_to_an_unreachable_hub_is_a_clear_error(checkpoint):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_fake", "HF_HUB_OFFLINE": "0"}
    out = subprocess.run(
        [sys.executable, "vla-scripts/push_to_hub.py", "--checkpoint", str(checkpoint), "--repo_id", "someone/tiny"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    assert "push_to_hub: could not push" in out.stderr and "Check network access to the Hub" in out.stderr
    assert "Traceback" not in out.stderr


def test_push_refuses_a_folder_that_would_not_load(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    out = subprocess.run(
        [sys.executable, "vla-scripts/push_to_hub.py", "--checkpoint", str(tmp_path), "--repo_id", "a/b", "--dry_run", "True"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0 and "no action_head" in out.stderr


def test_a_hub_id_loads_offline_from_the_local_cache(checkpoint, tmp_path, monkeypatch):
    """What a machine that downloaded the checkpoint earlier sees: the Hub id resolves without network."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--someone--tiny-lightvla" / "snapshots" / revision
    shutil.copytree(checkpoint, snapshot, ignore=shutil.ignore_patterns("base_model", "training_state.pt"))
    (cache / "models--someone--tiny-lightvla" / "refs").mkdir()
    (cache / "models--someone--tiny-lightvla" / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from_hub = load_inference_policy("someone/tiny-lightvla")
    local = load_inference_policy(str(checkpoint))
    obs = {"full_image": np.full((64, 64, 3), 90, np.uint8), "wrist_image": np.zeros((64, 64, 3), np.uint8),
           "state": np.zeros(8)}  # fmt: skip
    a, _ = predict_action_chunk(from_hub, [obs], ["pick up the soup"])
    b, _ = predict_action_chunk(local, [obs], ["pick up the soup"])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="could not be fetched from the Hugging Face Hub"):
        load_inference_policy("someone/not-downloaded")


class FakeHub(http.server.BaseHTTPRequestHandler):
    """The four Hub endpoints a commit of regular files goes through; what arrives is kept in ``received``."""

    received: dict = {}

    def log_message(self, *args):
        pass

    def reply(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/api/repos/create":
            request = json.loads(body)
            self.received["created"] = (request["organization"], request["name"], request.get("visibility"))
            return self.reply({"url": f"{base}/{request['organization']}/{request['name']}"})
        if self.path == "/api/validate-yaml":
            return self.reply({})
        if self.path.endswith("/preupload/main"):
            files = json.loads(body)["files"]
            return self.reply(
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if self.path.endswith("/commit/main"):
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            self.received["header"] = lines[0]["value"]
            self.received["files"] = {
                item["value"]["path"]: base64.b64decode(item["value"]["content"])
                for item in lines[1:]
                if item["key"] == "file"
            }
            return self.reply({"commitUrl": f"{base}/someone/tiny/commit/0123abcd", "commitOid": "0123abcd"})
        self.send_error(404)


def test_push_uploads_the_folder_and_its_card_in_one_commit(checkpoint):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = push_checkpoint(
            checkpoint, "someone/tiny", private=True, token="hf_fake", endpoint=f"http://127.0.0.1:{server.server_port}"
        )
    finally:
        server.shutdown()
    received = FakeHub.received
    assert url.endswith("/someone/tiny/commit/0123abcd")
    assert received["created"] == ("someone", "tiny", "private")
    assert received["header"]["summary"] == "Upload LightVLA checkpoint tiny-policy"
    expected = {str(rel): (checkpoint / rel).read_bytes() for rel in files_to_upload(checkpoint)}
    assert received["files"] == {**expected, "README.md": model_card(checkpoint, "someone/tiny").encode()}
