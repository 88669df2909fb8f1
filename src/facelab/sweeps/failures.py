"""Why a trial failed. Every FAILED trial of a sweep holds two user attributes: ``note`` (why, in words) and
``failure`` (its kind), which ``facelab sweep report``, report.html and optuna-dashboard show:

- ``error``: its training failed (an exception, a diverged loss, no finite value of the metric). Its point is not
  tried again, and it counts towards ``max_failed``.
- ``interrupted``: its worker was stopped (Ctrl-C, SIGTERM, the end of the ``facelab sweep`` that started it)
  or died (killed, its machine down: its heartbeat went stale). Another trial takes its place, and its point
  may be drawn again.
- ``skipped``: given up before training: ``n_trials`` were already reached, or its point is another trial's.

A FAILED trial without these attributes (one recorded by an older facelab) counts as ``error``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from facelab.utils.secrets import mask_secrets

if TYPE_CHECKING:
    import optuna

NOTE = "note"
FAILURE = "failure"
ERROR, INTERRUPTED, SKIPPED = "error", "interrupted", "skipped"
FAILURES = (ERROR, INTERRUPTED, SKIPPED)


def note_trial(trial: optuna.trial.BaseTrial, note: str, failure: str | None = None) -> None:
    """Record why ``trial`` ends as it does (``failure``: the kind, for a trial that fails); no password is
    ever recorded."""
    assert failure is None or failure in FAILURES, failure
    trial.set_user_attr(NOTE, mask_secrets(note))
    if failure is not None:
        trial.set_user_attr(FAILURE, failure)


def failure_of(trial: optuna.trial.FrozenTrial) -> str | None:
    """The kind of failure of a FAILED trial (None for any other state)."""
    if trial.state.name != "FAIL":
        return None
    kind = trial.user_attrs.get(FAILURE)
    return kind if kind in FAILURES else ERROR


def takes_its_point(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial's point counts as tried (or being tried): all but interrupted and skipped trials."""
    return failure_of(trial) in (None, ERROR)


def fail_stale_trials(study: optuna.Study, storage: Any, *, grace_s: int) -> list[int]:
    """Fail the trials whose heartbeat stopped ``grace_s`` seconds ago or more (their worker was killed, or its
    machine went down), each with its note; Optuna's own check (``optuna.storages.fail_stale_trials``) would
    fail them without one. Returns their numbers.

    Two processes may look at once: the one whose write lands first fails the trial, the other leaves it.
    """
    import optuna

    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    # (the stale check is the storage's own: Optuna's fail_stale_trials uses it in the same way)
    for trial_id in storage._get_stale_trial_ids(study_id):
        try:
            trial = storage.get_trial(trial_id)
            worker = trial.user_attrs.get("worker", "its worker")
            note = (f"interrupted: {worker} sent no heartbeat for over {grace_s} s (killed, or its machine went "
                    "down or lost the database)")
            storage.set_trial_user_attr(trial_id, NOTE, note)
            storage.set_trial_user_attr(trial_id, FAILURE, INTERRUPTED)
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process failed it first, or its worker finished it after all
    return failed
