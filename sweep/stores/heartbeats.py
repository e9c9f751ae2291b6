"""Optuna's RDB storage with one gap in its heartbeats closed.

Optuna fails a RUNNING trial whose heartbeat went stale, but skips one that never beat. A
worker killed between creating its trial (`study.ask`, which also samples its parameters)
and the first heartbeat leaves that trial RUNNING for good, and at the end of the study every
worker waits for it. `HeartbeatStorage` counts such a trial stale once this process has seen
it silent for the grace period. It goes by its own clock, because a trial's start time comes
from the clock and time zone of whichever machine created it.

A stale trial is given its reason (`records.ERROR`) before Optuna fails it, since a
finished trial's attributes can no longer be written; Optuna itself records none.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
from sqlalchemy import text

from sweep.optuna_private import StaleTrialHookStorage
from sweep.stores import records

# Optuna's schema: RUNNING trials of a study that have no heartbeat row.
NEVER_BEAT = text(
    "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
    "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL"
)


class HeartbeatStorage(StaleTrialHookStorage):
    """`RDBStorage` whose stale trials include those that never beat (see the module)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._silent_since: dict[int, float] = {}  # trial id -> when this process first saw it

    def stale_trials(self, study_id: int) -> dict[int, str]:
        """The study's stale trials (trial id -> why), without writing anything."""
        now = time.monotonic()
        with self.engine.connect() as connection:
            silent = [row[0] for row in connection.execute(NEVER_BEAT, {"study": study_id})]
        self._silent_since = {trial_id: self._silent_since.get(trial_id, now) for trial_id in silent}
        assert self.heartbeat_interval is not None  # Optuna asks only with heartbeats on
        grace = self.grace_period or 2 * self.heartbeat_interval
        lost = f"worker lost: no heartbeat for {grace:g} s (killed, out of memory, storage failed or machine down)"
        stale = dict.fromkeys(self.optuna_stale_trial_ids(study_id), lost)
        for trial_id, since in self._silent_since.items():
            if now - since > grace:
                stale[trial_id] = f"worker lost before its first heartbeat (silent for {grace:g} s)"
        return stale

    def stale_trials_to_fail(self, study_id: int) -> list[int]:
        """Optuna fails the trials this returns: each gets its reason first."""
        stale = self.stale_trials(study_id)
        for trial_id, reason in stale.items():
            try:
                self.set_trial_user_attr(trial_id, records.ERROR, reason)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker failed it first, with the same reason
        return list(stale)
