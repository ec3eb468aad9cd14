"""A scripted pick-and-place expert for LIBERO that reads privileged simulator state.

It makes real demonstrations on a fresh machine (no downloads): for every `on` / `in <...contain_region>` goal
predicate of the task's BDDL file it grasps the object top-down, carries it over the target and releases it.
Tasks with other predicates (open a drawer, turn on the stove, ...) raise `UnsupportedTask`.

Control is OSC_POSE deltas at 20 Hz, as in the human demonstrations: `[dx, dy, dz, dax, day, daz, gripper]` in
[-1, 1], where 1 is 5 cm / 0.5 rad per step and the gripper closes at +1. The hand keeps its initial (pointing
down) orientation, turned about the vertical when the object is narrower across the other horizontal axis.
"""

import enum
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

MAX_ROT_STEP = 0.5  # radians per unit of action
OPEN, CLOSE = -1.0, 1.0
MAX_GRIPPER_SPAN = 0.075  # objects wider than this (bowls, plates) are grasped by the rim
RIM_INSET, RIM_DEPTH = 0.015, 0.012  # rim grasp point: this far inside the box's edge and below its top


class UnsupportedTask(ValueError):
    """The task's goal needs a skill the expert does not script (articulated objects, pushing, switches)."""


@dataclass(frozen=True)
class ExpertConfig:
    gain: float = 12.0  # position error (m) -> action; saturates beyond ~8 cm
    rot_gain: float = 2.0
    tolerance: float = 0.008  # metres: a waypoint counts as reached
    approach_height: float = 0.10  # above the grasp point before descending
    lift_clearance: float = 0.06  # object bottom above the target's top while carrying
    release_clearance: float = 0.02  # object bottom above the target's top when letting go
    grip_steps: int = 12  # steps to close or open the fingers
    waypoint_timeout: int = 60  # steps before giving up on reaching a waypoint
    stall_steps: int = 5  # lowering an object: let go once the hand got no closer than this many steps ago
    stall_progress: float = 0.001  # metres: ... by more than this (the object rests on something)
    max_regrasps: int = 3  # grasp attempts after the first (each tries the next candidate grasp)


@dataclass(frozen=True)
class PickPlace:
    obj: str  # body name of the object to move
    target: str  # object or region site name


class Phase(enum.Enum):
    APPROACH = "approach"
    DESCEND = "descend"
    GRASP = "grasp"
    LIFT = "lift"
    CARRY = "carry"
    LOWER = "lower"
    RELEASE = "release"
    RETREAT = "retreat"
    DONE = "done"


def goal_subtasks(env) -> list[PickPlace]:
    """Translate the BDDL goal into pick-and-place subtasks, or raise UnsupportedTask."""
    subtasks = []
    for predicate in env.env.parsed_problem["goal_state"]:
        kind, *args = predicate
        if kind == "on" and len(args) == 2 or kind == "in" and len(args) == 2 and args[1].endswith("contain_region"):
            subtasks.append(PickPlace(args[0], args[1]))
        else:
            raise UnsupportedTask(f"the scripted expert cannot achieve goal predicate {predicate}")
    return subtasks


class SceneGeometry:
    """World-frame bounding boxes of objects and positions of region sites, from the live simulator."""

    def __init__(self, env):
        # Keep the env wrapper, never its MjSim/MjModel: a hard reset or close frees those, and a Python reference
        # that outlives them crashes the process when it is collected.
        self._wrapper = env
        self.env = env.env
        model = self.sim.model
        roots = model.body_rootid[model.geom_bodyid]
        collides = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
        self._collision_geoms = {int(r): np.flatnonzero((roots == r) & collides) for r in np.unique(roots)}

    @property
    def sim(self):
        return self._wrapper.sim

    def _root(self, name: str) -> int:
        model = self.sim.model
        body = self.env.obj_body_id[name] if name in self.env.obj_body_id else model.body_name2id(name)
        return int(model.body_rootid[body])

    def has_object(self, name: str) -> bool:
        return name in self.env.obj_body_id

    def aabb(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(low corner, high corner) around the collision geometry of object `name` (and its moving parts)."""
        model, data = self.sim.model, self.sim.data
        geoms = self._collision_geoms[self._root(name)]
        local = model._model.geom_aabb[geoms]  # (n, 6): centre and half sizes in each geom's frame
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        corners = local[:, None, :3] + signs[None] * local[:, None, 3:]  # (n, 8, 3)
        rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
        world = np.einsum("nij,nkj->nki", rot, corners) + data.geom_xpos[geoms][:, None]
        return world.reshape(-1, 3).min(0), world.reshape(-1, 3).max(0)

    def target_point(self, target: str) -> tuple[np.ndarray, float]:
        """(xy centre, top height) of a placement target: an object, or a region site (of an object or a table)."""
        if self.has_object(target):
            low, high = self.aabb(target)
            return (low[:2] + high[:2]) / 2, float(high[2])
        site = self.sim.data.get_site_xpos(target).copy()
        top = float(site[2])
        owner = next((name for name in self.env.obj_body_id if target.startswith(name + "_")), None)
        if owner is not None:
            top = max(top, float(self.aabb(owner)[1][2]))
        return site[:2], top


def grasp_candidates(low: np.ndarray, high: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Top-down grasps for an object with this bounding box, best first, as (grasp point, hand yaw).

    The fingers close along the hand's y axis (yaw 0) or, turned, along x. An object that fits between the fingers
    is grasped at its centre, a little below its top; a wider one (a bowl, a plate) by the rim, one finger inside
    and one outside, from each of its four sides in turn.
    """
    size, centre = high - low, (low + high) / 2
    yaws = [(0.0, 1), (np.pi / 2, 0)]  # (yaw, horizontal axis the fingers span)
    if size[1] > 1.2 * size[0]:  # clearly elongated along y: span its narrow side first
        yaws.reverse()
    candidates = []
    for yaw, axis in yaws:
        if size[axis] <= MAX_GRIPPER_SPAN:
            grasp = centre.copy()
            grasp[2] = high[2] - min(0.03, size[2] / 2)
            candidates.append((grasp, yaw))
    if candidates:
        return candidates
    for yaw, axis in [(0.0, 1), (np.pi / 2, 0)]:
        for side in (high[axis] - RIM_INSET, low[axis] + RIM_INSET):
            grasp = centre.copy()
            grasp[axis] = side
            grasp[2] = high[2] - RIM_DEPTH
            candidates.append((grasp, yaw))
    return candidates


def _yaw_quat(base: Rotation, yaw: float) -> Rotation:
    return Rotation.from_euler("z", yaw) * base


class ScriptedExpert:
    """Stateful policy: call `reset(env, obs)` at the start of an episode, then `act(obs)` every step."""

    def __init__(self, config: ExpertConfig | None = None):
        self.cfg = config or ExpertConfig()

    def reset(self, env, obs: dict) -> None:
        self.geometry = SceneGeometry(env)
        self.subtasks = goal_subtasks(env)
        self.base_orientation = Rotation.from_quat(obs["robot0_eef_quat"])
        self.index = 0
        self.regrasps = 0
        self._start_subtask()

    # -- state machine --------------------------------------------------------------------------------------------
    def _start_subtask(self) -> None:
        self.phase = Phase.APPROACH if self.index < len(self.subtasks) else Phase.DONE
        self.phase_steps = 0
        if self.phase is Phase.DONE:
            return
        low, high = self.geometry.aabb(self.subtasks[self.index].obj)
        candidates = grasp_candidates(low, high)
        self.grasp_point, self.yaw = candidates[self.regrasps % len(candidates)]
        self.object_bottom_at_grasp = float(low[2])
        self.target_orientation = _yaw_quat(self.base_orientation, self.yaw)

    def _advance(self, phase: Phase) -> None:
        self.phase = phase
        self.phase_steps = 0
        self.distances: list[float] = []

    def _stalled(self, eef: np.ndarray, target: np.ndarray) -> bool:
        """No progress towards `target` over the last `stall_steps` steps. A bowl lowered onto a plate often stops
        ~1 cm short of the release height (it rests on the rim): waiting for the timeout there recorded ~40 steps of
        motionless hovering before an arbitrary release, and policies trained on that hovered forever."""
        self.distances.append(float(np.linalg.norm(target - eef)))
        n = self.cfg.stall_steps
        return len(self.distances) > n and self.distances[-1 - n] - self.distances[-1] < self.cfg.stall_progress

    def _move(self, eef: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, bool]:
        delta = target - eef
        return np.clip(self.cfg.gain * delta, -1.0, 1.0), bool(np.linalg.norm(delta) < self.cfg.tolerance)

    def _rotation_action(self, quat: np.ndarray) -> np.ndarray:
        error = (self.target_orientation * Rotation.from_quat(quat).inv()).as_rotvec()
        return np.clip(self.cfg.rot_gain * error / MAX_ROT_STEP, -1.0, 1.0)

    @property
    def placing(self) -> bool:
        """Lowering or letting go of an object: the task may already count as done, the demonstration is not."""
        return self.phase in (Phase.LOWER, Phase.RELEASE)

    def act(self, obs: dict) -> np.ndarray:
        eef = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
        if self.phase is Phase.DONE:
            return np.array([0, 0, 0, 0, 0, 0, OPEN], dtype=np.float64)
        self.phase_steps += 1
        translation, gripper = self._phase_action(eef)
        return np.concatenate([translation, self._rotation_action(obs["robot0_eef_quat"]), [gripper]])

    def _phase_action(self, eef: np.ndarray) -> tuple[np.ndarray, float]:
        cfg, task = self.cfg, self.subtasks[self.index]
        timed_out = self.phase_steps > cfg.waypoint_timeout
        if self.phase is Phase.APPROACH:
            action, reached = self._move(eef, self.grasp_point + [0, 0, cfg.approach_height])
            if reached or timed_out:
                self._advance(Phase.DESCEND)
            return action, OPEN
        if self.phase is Phase.DESCEND:
            action, reached = self._move(eef, self.grasp_point)
            if reached:
                self._advance(Phase.GRASP)
            elif timed_out:  # blocked on the way down (a drawer, a neighbour): try another grasp
                return self._regrasp(), OPEN
            return action, OPEN
        low, _ = self.geometry.aabb(task.obj)
        target_xy, target_top = self.geometry.target_point(task.target)
        if self.phase is Phase.GRASP:
            action, _ = self._move(eef, self.grasp_point)
            if self.phase_steps >= cfg.grip_steps:
                # carry high enough that the held object's bottom clears the target; fixed now, so that a missed
                # grasp cannot make the hand chase an object that stays on the table
                rise = max(cfg.approach_height, target_top + cfg.lift_clearance - self.object_bottom_at_grasp)
                self.carry_z = self.grasp_point[2] + rise
                self._advance(Phase.LIFT)
            return action, CLOSE
        if self.phase is Phase.LIFT:
            action, reached = self._move(eef, np.array([eef[0], eef[1], self.carry_z]))
            if reached or timed_out:
                if low[2] < self.object_bottom_at_grasp + 0.02:  # the object stayed on the table: grasp again
                    return self._regrasp(), OPEN
                self._advance(Phase.CARRY)
            return action, CLOSE
        object_xy = (low[:2] + self.geometry.aabb(task.obj)[1][:2]) / 2
        eef_goal_xy = target_xy + (eef[:2] - object_xy)  # bring the object's centre, not the hand, over the target
        if self.phase is Phase.CARRY:
            action, reached = self._move(eef, np.array([*eef_goal_xy, self.carry_z]))
            if reached or timed_out:
                self._advance(Phase.LOWER)
            return action, CLOSE
        if self.phase is Phase.LOWER:
            release_z = eef[2] + (target_top + cfg.release_clearance - low[2])
            target = np.array([*eef_goal_xy, release_z])
            action, reached = self._move(eef, target)
            if reached or timed_out or self._stalled(eef, target):
                self._advance(Phase.RELEASE)
            return action, CLOSE
        if self.phase is Phase.RELEASE:
            if self.phase_steps >= cfg.grip_steps:
                self._advance(Phase.RETREAT)
            return np.zeros(3), OPEN
        # RETREAT: straight up, then the next subtask
        action, reached = self._move(eef, np.array([eef[0], eef[1], self.grasp_point[2] + 2 * cfg.approach_height]))
        if reached or self.phase_steps > cfg.grip_steps:
            self.index += 1
            self.regrasps = 0
            self._start_subtask()
        return action, OPEN

    def _regrasp(self) -> np.ndarray:
        self.regrasps += 1
        if self.regrasps > self.cfg.max_regrasps:
            self._advance(Phase.DONE)  # give up; the episode will count as a failure
        else:
            self._start_subtask()
        return np.zeros(3)


class ScriptedPolicy:
    """The expert behind the evaluation harness's policy interface: one action per query, in policy conventions
    (gripper 1 = open, 0 = close), so the harness's post-processing maps it back exactly. Its success rate through
    the harness validates the harness itself."""

    def __init__(self, config: ExpertConfig | None = None):
        self.expert = ScriptedExpert(config)

    def start_episode(self, env, obs: dict) -> None:
        self.expert.reset(env, obs)

    def __call__(self, observation: dict, language: str, obs: dict) -> tuple[np.ndarray, dict]:
        action = self.expert.act(obs)
        action[-1] = (1.0 - action[-1]) / 2.0  # -1 open / +1 close -> 1 open / 0 close
        return action[None], {}
