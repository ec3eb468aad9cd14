"""HTTP serving of a policy: upstream's `POST /act` protocol, batched requests, a health endpoint, clear errors.

Protocol (compatible with upstream OpenVLA-OFT's `vla-scripts/deploy.py`; arrays are json-numpy encoded, i.e.
``{"__numpy__": <base64>, "dtype": ..., "shape": [...]}``):

* ``POST /act`` with one observation ``{"full_image": uint8 HxWx3, "wrist_image": ..., "state": [...],
  "instruction": str}`` -> the action chunk, a list of ``chunk`` arrays of ``action_dim`` un-normalised actions
  (no gripper post-processing, as upstream).
* ``POST /act`` with ``{"encoded": "<json-numpy string of the observation>"}`` (upstream's double-encoded clients)
  -> the chunk as a json-numpy *string*.
* ``POST /act`` with ``{"observations": [obs, obs, ...]}`` -> one chunk per observation, computed in one batched
  forward pass (each sample is pruned on its own, so a batch answers exactly what single requests would).
* ``GET /health`` -> what is served (checkpoint, images, proprio, unnorm key, chunk shape, pruner) and counters.

Malformed requests are answered with 400 (not JSON), 413 (batch too large) or 422 (wrong keys, shapes, types) and a
message naming the problem; the server keeps serving. Inference runs in one worker thread (``InferenceBatcher``):
observations of requests that arrive while a batch runs are answered together in the next batch (up to
``max_batch_size``), so several robots or simulators share one forward pass, and ``/health`` stays responsive.
"""

import asyncio
import logging
import queue
import threading
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from prismatic.policy.checkpoints import Policy

log = logging.getLogger("lightvla.serving")


class RequestError(ValueError):
    """A request the server cannot answer; ``status`` is the HTTP status (400 or 422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class ServerState:
    policy: Policy
    unnorm_key: str
    center_crop: bool = True
    max_batch_size: int = 32
    checkpoint: str = ""
    served: int = 0  # observations answered
    batches: int = 0  # forward passes run
    rejected: int = 0  # requests answered 4xx
    failed: int = 0  # requests answered 5xx


# --- payload -------------------------------------------------------------------------------------------------------
def parse_body(body: bytes):
    import json_numpy

    try:
        return json_numpy.loads(body)
    except ValueError as err:  # json.JSONDecodeError and bad base64/dtype in an array are both ValueErrors
        raise RequestError(f"request body is not valid JSON (json-numpy encoded): {err}", status=400) from None


def _image(value, key: str) -> np.ndarray:
    image = np.asarray(value)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] < 8 or image.shape[1] < 8:
        raise RequestError(f"{key} has shape {image.shape}; expected an RGB image of shape (H, W, 3)")
    if image.dtype != np.uint8:
        raise RequestError(f"{key} has dtype {image.dtype}; expected uint8 pixels (0..255)")
    return image


def check_observation(obs, state: ServerState, index: int | None = None) -> tuple[dict, str]:
    """One payload observation -> (observation for the policy, instruction), or a RequestError naming the problem."""
    where = "" if index is None else f"observations[{index}]: "
    if not isinstance(obs, Mapping):
        raise RequestError(f"{where}expected a JSON object with full_image, wrist image(s), state and instruction")
    vla = state.policy.vla
    num_images = vla.get_num_images_in_input()
    wrist_keys = sorted(k for k in obs if "wrist" in k)
    required = ["full_image", "instruction"] + (["state"] if state.policy.proprio_projector is not None else [])
    missing = [k for k in required if k not in obs]
    if missing or 1 + len(wrist_keys) < num_images:
        need = required + ([f"{num_images - 1} key(s) containing 'wrist'"] if num_images > 1 else [])
        raise RequestError(f"{where}missing {missing or 'wrist image(s)'}; this policy needs {need}")
    instruction = obs["instruction"]
    if not isinstance(instruction, str) or not instruction.strip():
        raise RequestError(f"{where}instruction must be a non-empty string")
    checked = {"full_image": _image(obs["full_image"], where + "full_image")}
    for key in wrist_keys[: num_images - 1]:
        checked[key] = _image(obs[key], where + key)
    if state.policy.proprio_projector is not None:
        proprio = np.asarray(obs["state"], dtype=object)
        expected = state.policy.proprio_projector.proprio_dim
        try:
            proprio = proprio.astype(np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise RequestError(f"{where}state must be a list of {expected} numbers") from None
        if proprio.shape != (expected,) or not np.isfinite(proprio).all():
            raise RequestError(f"{where}state has {proprio.size} value(s); expected {expected} finite numbers")
        checked["state"] = proprio
    return checked, instruction


def parse_request(payload, state: ServerState) -> tuple[list[dict], list[str], str]:
    """-> (observations, instructions, kind) with kind in {"single", "encoded", "batch"}."""
    if isinstance(payload, Mapping) and "encoded" in payload:
        if not isinstance(payload["encoded"], str):
            raise RequestError("'encoded' must be a json-numpy string of the observation")
        obs, instruction = check_observation(parse_body(payload["encoded"].encode()), state)
        return [obs], [instruction], "encoded"
    if isinstance(payload, Mapping) and "observations" in payload:
        items = payload["observations"]
        if not isinstance(items, list) or not items:
            raise RequestError("'observations' must be a non-empty list of observations")
        if len(items) > state.max_batch_size:
            raise RequestError(f"{len(items)} observations in one request; the server takes at most "
                               f"{state.max_batch_size} (--max_batch_size)", status=413)  # fmt: skip
        checked = [check_observation(obs, state, i) for i, obs in enumerate(items)]
        return [c[0] for c in checked], [c[1] for c in checked], "batch"
    obs, instruction = check_observation(payload, state)
    return [obs], [instruction], "single"


# --- inference -----------------------------------------------------------------------------------------------------
def act(state: ServerState, observations: list[dict], instructions: list[str]) -> np.ndarray:
    """(B, chunk, action_dim) float32 actions for one batch (called from the batcher's thread only)."""
    from prismatic.policy.inference import predict_action_chunk

    actions, _ = predict_action_chunk(state.policy, observations, instructions, state.unnorm_key, state.center_crop)
    state.served += len(observations)
    state.batches += 1
    return actions.astype(np.float32)


class InferenceBatcher:
    """One inference thread; requests waiting while it works are merged into its next batch.

    A request's observations always stay in one batch, in order; a batch takes whole requests until the next one
    would exceed ``max_batch_size``. Batched results equal per-sample ones (each sample is pruned on its own).
    """

    def __init__(self, state: ServerState):
        self.state = state
        self.requests: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name="inference", daemon=True)
        self.thread.start()

    def submit(self, observations: list[dict], instructions: list[str]) -> Future:
        future: Future = Future()
        self.requests.put((observations, instructions, future))
        return future

    def _next_batch(self) -> list:
        batch = [self.requests.get()]
        size = len(batch[0][0])
        while True:
            try:
                item = self.requests.get_nowait()
            except queue.Empty:
                return batch
            if size + len(item[0]) > self.state.max_batch_size:
                self.requests.queue.appendleft(item)  # first in line for the next batch
                return batch
            batch.append(item)
            size += len(item[0])

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                actions = act(
                    self.state, [o for obs, _, _ in batch for o in obs], [t for _, texts, _ in batch for t in texts]
                )
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error, the thread goes on
                log.error("inference failed:\n%s", traceback.format_exc())
                for _, _, future in batch:
                    future.set_exception(err)
                continue
            start = 0
            for obs, _, future in batch:
                future.set_result(actions[start : start + len(obs)])
                start += len(obs)


def encode_response(actions: np.ndarray, kind: str):
    """Upstream's response shapes: a list of per-step arrays; a json-numpy string for encoded requests."""
    import json_numpy

    chunks = [list(chunk) for chunk in actions]
    if kind == "batch":
        return json_numpy.dumps(chunks)
    if kind == "encoded":
        return json_numpy.dumps(json_numpy.dumps(chunks[0]))
    return json_numpy.dumps(chunks[0])


def health(state: ServerState) -> dict:
    vla = state.policy.vla
    pruner = vla.pruner
    name = type(pruner).__name__ if getattr(pruner, "enabled", True) else "none"
    return {
        "status": "ok",
        "checkpoint": state.checkpoint,
        "num_images_in_input": vla.get_num_images_in_input(),
        "use_proprio": state.policy.proprio_projector is not None,
        "unnorm_key": state.unnorm_key,
        "action_chunk": [vla.action_space.num_actions_chunk, vla.action_space.action_dim],
        "pruner": name,
        "device": str(vla.device),
        "max_batch_size": state.max_batch_size,
        "served": state.served,
        "batches": state.batches,
        "rejected": state.rejected,
        "failed": state.failed,
    }


def make_app(state: ServerState):
    """The FastAPI application serving ``state.policy``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="LightVLA policy server")
    batcher = InferenceBatcher(state)

    @app.get("/health")
    def get_health() -> dict:
        return health(state)

    @app.post("/act")
    async def post_act(request: Request):
        start = time.perf_counter()
        try:
            observations, instructions, kind = parse_request(parse_body(await request.body()), state)
        except RequestError as err:
            state.rejected += 1
            return JSONResponse({"error": str(err)}, status_code=err.status)
        try:
            actions = await asyncio.wrap_future(batcher.submit(observations, instructions))
        except Exception as err:  # noqa: BLE001 - the server must answer and keep serving
            state.failed += 1
            return JSONResponse({"error": f"inference failed: {type(err).__name__}: {err}"}, status_code=500)
        log.info("/act: %d observation(s) in %.1f ms", len(observations), (time.perf_counter() - start) * 1e3)
        return Response(encode_response(actions, kind), media_type="application/json")

    return app
