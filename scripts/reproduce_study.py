"""The paper's study at laptop scale (experiments/robot/libero/study.py): demos for 3 tasks of 2 suites, one stage-1
OpenVLA-OFT policy, LightVLA with decaying uniform / decaying Gumbel / no / fixed noise and OFT continued from it,
training-free pruners at LightVLA's budget, all evaluated in LIBERO; results.json, results.md and figures.

    python scripts/reproduce_study.py --out_dir runs/study                # ~1 h 55 min on 2 CPU cores (README)
    python scripts/reproduce_study.py --out_dir runs/study_quick --quick True

Re-running the same command continues where it stopped (demos, each training run, each evaluation).
"""

import draccus

from experiments.robot.libero.study import StudyConfig, run_study


@draccus.wrap()
def main(cfg: StudyConfig) -> dict:
    return run_study(cfg)


if __name__ == "__main__":
    main()
