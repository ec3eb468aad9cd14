"""vla-scripts/deploy.py as a real server on loopback, driven by a real HTTP client."""

import importlib.util
import json
import urllib.error
import urllib.request
from pathlib import Path

import json_numpy
import numpy as np
import pytest
from conftest import UNNORM_KEY

from experiments.robot.openvla_utils import (
    ServerError,
    get_action_from_server,
    get_actions_from_server,
)
from prismatic.policy.inference import load_inference_policy, predict_action_chunk

spec = importlib.util.spec_from_file_location(
    "benchmark_server", Path(__file__).resolve().parents[1] / "scripts" / "benchmark_server.py"
)
benchmark_server = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark_server)
observation = benchmark_server.observation


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def server(checkpoint):
    port = benchmark_server.free_port()
    process = benchmark_server.start_server(str(checkpoint), port, "--unnorm_key", UNNORM_KEY, "--max_batch_size", "4")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def local_policy(checkpoint):
    return load_inference_policy(str(checkpoint))


def expected(policy, observations):
    actions, _ = predict_action_chunk(
        policy, [{k: v for k, v in o.items() if k != "instruction"} for o in observations],
        [o["instruction"] for o in observations], UNNORM_KEY,
    )  # fmt: skip
    return actions


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def health(server) -> dict:
    return json.loads(urllib.request.urlopen(f"{server}/health", timeout=10).read())


def test_health_describes_what_is_served(server, checkpoint):
    info = health(server)
    assert info["status"] == "ok" and info["checkpoint"] == str(checkpoint)
    assert info["num_images_in_input"] == 2 and info["use_proprio"] and info["unnorm_key"] == UNNORM_KEY
    assert info["action_chunk"] == [8, 7] and info["pruner"] == "TokenPruner" and info["device"] == "cpu"


def test_actions_equal_in_process_predict_action(server, local_policy):
    obs = observation(1)
    actions = get_action_from_server(obs, f"{server}/act")
    assert actions.shape == (8, 7) and actions.dtype == np.float32
    np.testing.assert_allclose(actions, expected(local_policy, [obs])[0], atol=1e-5)


def test_double_encoded_requests_get_a_double_encoded_answer(server, local_policy):
    obs = observation(2)
    status, answer = post(f"{server}/act", json.dumps({"encoded": json_numpy.dumps(obs)}).encode())
    assert status == 200 and isinstance(answer, str)  # upstream's encoded clients json_numpy.loads the string
    np.testing.assert_allclose(np.stack(json_numpy.loads(answer)), expected(local_policy, [obs])[0], atol=1e-5)


def test_batched_request_equals_single_requests(server, local_policy):
    observations = [observation(i) for i in range(3)]
    observations[1]["instruction"] = "open the top drawer and put the bowl inside"
    batch = get_actions_from_server(observations, f"{server}/act")
    assert batch.shape == (3, 8, 7)
    singles = np.stack([get_action_from_server(o, f"{server}/act") for o in observations])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    np.testing.assert_allclose(batch, expected(local_policy, observations), atol=1e-5)


def malformed_bodies():
    good = observation(0)
    no_state = {k: v for k, v in good.items() if k != "state"}
    no_wrist = {k: v for k, v in good.items() if k != "wrist_image"}
    yield "not json", b"{'full_image': ", 400, "not valid JSON"
    yield "missing state", json_numpy.dumps(no_state).encode(), 422, "missing ['state']"
    yield "missing wrist", json_numpy.dumps(no_wrist).encode(), 422, "wrist"
    yield "grey image", json_numpy.dumps({**good, "full_image": np.zeros((64, 64), np.uint8)}).encode(), 422, "(H, W, 3)"
    yield "float image", json_numpy.dumps({**good, "full_image": np.zeros((64, 64, 3))}).encode(), 422, "uint8"
    yield "short state", json_numpy.dumps({**good, "state": [0.1, 0.2]}).encode(), 422, "expected 8 finite"
    yield "no instruction", json_numpy.dumps({**good, "instruction": ""}).encode(), 422, "non-empty string"
    yield "a list", b"[1, 2, 3]", 422, "expected a JSON object"
    yield "batch too large", json_numpy.dumps({"observations": [good] * 5}).encode(), 413, "at most 4"
    yield "bad batch item", json_numpy.dumps({"observations": [good, {"x": 1}]}).encode(), 422, "observations[1]"


@pytest.mark.parametrize("name,body,status,message", list(malformed_bodies()), ids=[b[0] for b in malformed_bodies()])
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(server, local_policy, name, body, status, message):
    rejected = health(server)["rejected"]
    code, answer = post(f"{server}/act", body)
    assert code == status and message in answer["error"], answer
    assert health(server)["rejected"] == rejected + 1
    obs = observation(3)
    np.testing.assert_allclose(get_action_from_server(obs, f"{server}/act"), expected(local_policy, [obs])[0], atol=1e-5)


def test_client_raises_the_servers_message(server):
    with pytest.raises(ServerError, match="422: missing"):
        get_action_from_server({"instruction": "x"}, f"{server}/act")


def test_concurrent_load_has_no_failures_and_right_answers(server, local_policy):
    before = health(server)
    report = benchmark_server.load_test(f"{server}/act", num_requests=50, clients=5)
    assert report["failures"] == 0 and report["requests_per_s"] > 0
    answers = expected(local_policy, [observation(i) for i in range(4)])
    for i, ok, _, actions in report["results"]:
        np.testing.assert_allclose(actions, answers[i % 4], atol=1e-5)
    after = health(server)
    assert after["failed"] == 0 and after["served"] - before["served"] == 50
    assert after["batches"] - before["batches"] < 50  # concurrent requests were answered in shared batches


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(ConnectionError, match="is deploy.py running"):
        get_action_from_server(observation(0), f"http://127.0.0.1:{benchmark_server.free_port()}/act", timeout=5)


def test_deploy_config_refuses_what_it_cannot_serve():
    spec = importlib.util.spec_from_file_location(
        "deploy", Path(__file__).resolve().parents[1] / "vla-scripts" / "deploy.py"
    )
    deploy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deploy)
    with pytest.raises(ValueError, match="pretrained_checkpoint is required"):
        deploy.DeployConfig()
    with pytest.raises(ValueError, match="L1 regression"):
        deploy.DeployConfig(pretrained_checkpoint="x", use_diffusion=True)
    with pytest.raises(ValueError, match="max_batch_size"):
        deploy.DeployConfig(pretrained_checkpoint="x", max_batch_size=0)
