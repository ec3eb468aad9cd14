"""Client side of the policy server (`vla-scripts/deploy.py`), as upstream's `openvla_utils.get_action_from_server`.

    from experiments.robot.openvla_utils import get_action_from_server
    actions = get_action_from_server(
        {"full_image": img, "wrist_image": wrist, "state": state, "instruction": "put the bowl on the plate"},
        "http://127.0.0.1:8777/act",
    )  # (chunk, action_dim) array, un-normalised, gripper not post-processed

Standard library HTTP only, so a robot computer needs nothing beyond numpy and json-numpy.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_ENDPOINT = "http://0.0.0.0:8777/act"


class ServerError(RuntimeError):
    """The server answered with an error status; the message is the server's explanation."""

    def __init__(self, status: int, message: str):
        super().__init__(f"policy server answered {status}: {message}")
        self.status = status


def _post(payload, endpoint: str, timeout: float):
    import json_numpy

    request = urllib.request.Request(
        endpoint, data=json_numpy.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json_numpy.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        try:
            message = json.loads(body).get("error", body)
        except (ValueError, AttributeError):
            message = body
        raise ServerError(err.code, message) from None
    except urllib.error.URLError as err:
        raise ConnectionError(
            f"cannot reach the policy server at {endpoint} ({err.reason}); is deploy.py running?"
        ) from None


def get_action_from_server(
    observation: Mapping, server_endpoint: str = DEFAULT_ENDPOINT, timeout: float = 60.0
) -> np.ndarray:
    """One observation -> its action chunk (chunk, action_dim)."""
    return np.stack(_post(dict(observation), server_endpoint, timeout))


def get_actions_from_server(
    observations: Sequence[Mapping], server_endpoint: str = DEFAULT_ENDPOINT, timeout: float = 60.0
) -> np.ndarray:
    """Several observations in one batched request -> (B, chunk, action_dim)."""
    chunks = _post({"observations": [dict(o) for o in observations]}, server_endpoint, timeout)
    return np.stack([np.stack(chunk) for chunk in chunks])
