"""The wall-clock budget: size the run after its first timed steps, re-plan it at each validation,
and the hard stop. Pure arithmetic on the recipe's `state` dict; the caller re-makes the LR
schedule when a method returns True."""

from __future__ import annotations

import logging
import math

from .config import TrainConfig

logger = logging.getLogger(__name__)


def eval_every(config: TrainConfig, total_steps: int) -> int:
    """Optimizer steps between validations: `eval_every_steps`, else `evaluations_per_run` spread over the run."""
    if config.eval_every_steps:
        return config.eval_every_steps
    return max(1, math.ceil(total_steps / config.evaluations_per_run))


class BudgetPlanner:
    """`planned_steps`: what the epochs (and max_steps) allow; `tokens_per_step`: the mean tokens of
    one optimizer step over an epoch (the first plan scales the measured seconds per token by it)."""

    def __init__(self, config: TrainConfig, planned_steps: int, tokens_per_step: float):
        self.config, self.planned_steps, self.tokens_per_step = config, planned_steps, tokens_per_step

    @property
    def budget(self) -> float | None:
        return self.config.time_budget_s

    def first_plan(self, s: dict) -> bool:
        """After `budget_calibration_steps` steps, size the run (steps, evaluation cadence) to the
        budget. True when the LR schedule must be re-planned to end at `s["total_steps"]`."""
        c, budget = self.config, self.budget
        if not budget or s["budget_planned"] or s["step"] < c.budget_calibration_steps:
            return False
        s["budget_planned"], s["budget_planned_at"] = True, s["step"]
        seconds_per_token = s["train_s"] / max(s["trained_tokens"], 1)
        seconds_per_step = seconds_per_token * self.tokens_per_step
        seconds_per_eval = s["eval_s"] / max(len(s["history"]), 1)
        remaining = budget - s["elapsed_s"]
        # validation passes get at most `max_validation_share` of the budget (at least two of them)
        evaluations = c.evaluations_per_run or math.ceil(self.planned_steps / c.eval_every_steps)
        evaluations = max(2, min(evaluations, int(c.max_validation_share * budget / max(seconds_per_eval, 1e-9))))
        affordable = s["step"] + int(max(remaining - evaluations * seconds_per_eval, 0) / seconds_per_step)
        s["budget_estimate"] = {
            "seconds_per_step": round(seconds_per_step, 2), "seconds_per_validation": round(seconds_per_eval, 2),
            "affordable_steps": affordable, "planned_steps": self.planned_steps, "validations": evaluations,
        }
        if affordable < s["total_steps"]:
            s["total_steps"] = max(affordable, s["step"] + 1)
            s["eval_every"] = c.eval_every_steps or max(1, math.ceil(s["total_steps"] / evaluations))
            logger.warning(
                "Time budget %.0f s: ~%.1f s per step and %.1f s per validation here, so %d of %d planned steps "
                "(%.0f%% of the epochs asked for); the LR schedule is re-planned to end there",
                budget, seconds_per_step, seconds_per_eval, s["total_steps"], self.planned_steps,
                100 * s["total_steps"] / self.planned_steps,
            )
            return True
        logger.info("Time budget %.0f s: ~%.1f s per step here, all %d planned steps fit", budget, seconds_per_step,
                    self.planned_steps)
        return False

    def over_budget(self, s: dict) -> bool:
        """Past `budget_hard_stop` × the budget (after the first plan): stop outright."""
        return (s.get("budget_planned_at", math.inf) < s["step"]
                and s["elapsed_s"] > self.budget * self.config.budget_hard_stop)

    def replan(self, s: dict) -> bool:
        """After each validation, re-measure the pace so far and re-plan the run to what the rest
        of the budget holds: shorter when the planned steps no longer fit (instead of a hard stop
        half-way down the schedule), longer (up to the steps the epochs allow) when the first plan
        was too cautious. Only when the change is more than `budget_replan_tolerance` of the run.
        True when the LR schedule must be re-planned.

        The first plan rests on `budget_calibration_steps` steps. Seen on an Intel AMX CPU: 3.8 s
        per step over the first 3, then 5.5 s, 198 steps planned for a budget that held ~150; on an
        AMD AVX512-BF16 CPU: 7.7 s over the first 3, then 6.6 s on average, 96 steps planned and
        the loop ended 94 s inside its budget."""
        budget = self.budget
        if not budget or not s["budget_planned"] or s["step"] >= s["total_steps"]:
            return False
        seconds_per_step = s["train_s"] / max(s["step"], 1)
        seconds_per_eval = s["eval_s"] / max(len(s["history"]), 1)
        remaining = budget - s["elapsed_s"]
        every = max(s["eval_every"], 1)

        def fits(total_steps: int) -> bool:  # the steps left and the validations they bring
            left = total_steps - s["step"]
            return left * seconds_per_step + math.ceil(left / every) * seconds_per_eval <= remaining

        affordable = s["step"] + int(max(remaining, 0) / max(seconds_per_step + seconds_per_eval / every, 1e-9))
        while fits(affordable + 1) and affordable < self.planned_steps:
            affordable += 1
        while affordable > s["step"] and not fits(affordable):
            affordable -= 1
        affordable = min(affordable, self.planned_steps)
        if abs(affordable - s["total_steps"]) <= s["total_steps"] * self.config.budget_replan_tolerance:
            return False
        before, s["total_steps"] = s["total_steps"], max(affordable, s["step"] + 1)
        s.setdefault("budget_replans", []).append(
            {"at_step": s["step"], "seconds_per_step": round(seconds_per_step, 2), "from_steps": before,
             "to_steps": s["total_steps"]}
        )
        logger.warning(
            "Time budget %.0f s: %.1f s per step so far, so the run ends at step %d instead of %d; "
            "the LR schedule is re-planned to end there", budget, seconds_per_step, s["total_steps"], before,
        )
        return True
