"""Early stopping for multi-objective studies: stop, during training, the trials that
other trials already beat. Pure Python (no TensorFlow): the objective calls `judge`
after the epochs the rules name.

Optuna's pruners are single-objective (`trial.report` raises in a multi-objective
study), so sweep keeps its own rungs, in the manner of MO-ASHA (Schmucker et al. 2021:
asynchronous successive halving ordered by non-dominated sorting). Two rules
(`early_stopping: pruned | planned`; `true` is `pruned`):

* **pruned: once the masks are final.** After every epoch from the one in which its pruning
  window ends (its sparsity, and so its size, is final from then on) up to the last but
  one, a trial records the objectives training shows: validation accuracy (for `accuracy`
  and `int8_accuracy`) and the pruning masks' sparsity (for `sparsity`, `compressed_size`,
  `int8_size` and `int8_file_size`, which shrink as it grows). It is judged twice: after
  the epoch in which its window ends and halfway through the epochs left (never after the
  last epoch, where stopping saves nothing), each time against the other trials' records
  after the same number of epochs (some of them may have trained at their final sparsity
  for longer).
* **planned: from the plan, then as `pruned`.** A trial's final sparsity is known before
  its first batch: each layer's target (`planned_sparsity`, `sweep.modeling.training`).
  So after `PLANNED_RUNG` of its epochs every trial is also judged by its accuracy so far,
  its planned sparsity and its pruning progress (its masks' sparsity over the planned
  one): a third loss, so a trial whose pruning is still ahead (as accurate as the dense
  model) and one already pruned do not beat each other, only trials at least as far along.
  benchmarks/README.md (section 15) replays both rules on recorded studies.

The records go into the trial's user attributes (`sweep.stores.records.RUNGS` and
`RUNGS_PLANNED`, by epoch), through the storage, so every worker, machine and resumed run
compares against the same values. Latency is known only once the model is converted: a
study with a latency objective is never stopped early.

At a rung, once at least `min_trials` trials (running, finished or stopped, this one
included) have records there, a trial stops unless its non-domination rank is as good as
that of the best 1/`ETA` of them: trials on that rung's front always go on, so every
trade-off keeps a candidate. With `constraints.min_accuracy`, a trial also stops when its
accuracy plus the largest gain any complete trial made after that epoch stays below the floor.

A stopped trial is PRUNED in Optuna (its rungs kept), never enters the front and counts
toward `n_trials`. Optuna's TPE puts PRUNED trials in its "bad" group once enough trials
are complete (`_split_trials`), so it learns from them; NSGA-II and GP ignore them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sweep.optuna_private import domination_ranks

ETA = 3  # successive halving: the best third goes on
MIN_TRIALS = 6  # trials at a rung, this one included, before any is stopped there
PLANNED_RUNG = 1 / 8  # of a trial's epochs, after which `planned` judges it (epoch 1 of 8)
PLANNED_MIN_TRIALS = 3  # replayed, 3 to 6 stop alike (section 15); 3 judges the first trials too

ACCURACY_OBJECTIVES = {"accuracy", "int8_accuracy"}
SIZE_OBJECTIVES = {"sparsity", "compressed_size", "int8_size", "int8_file_size"}


@dataclass(frozen=True)
class Peer:
    """Another trial of the study, as a rung sees it: its records by epoch (`"<epoch>"` ->
    `{"losses": [...], "val_accuracy": a}`), and, once complete, its final accuracy."""

    rungs: Mapping[str, Mapping[str, Any]]
    final_val_accuracy: float | None  # None until the trial is complete


class EarlyStopped(Exception):
    """Raised after an epoch at which the trial lost its rung; the trial becomes PRUNED."""

    def __init__(self, epoch: int, reason: str, shortfall: float | None = None) -> None:
        super().__init__(f"stopped early after epoch {epoch}: {reason}")
        self.epoch = epoch
        self.shortfall = shortfall  # how far below min_accuracy it would end at best


def applies(objectives: Sequence[str]) -> bool:
    """Whether training shows every objective (latency does not)."""
    return set(objectives) <= ACCURACY_OBJECTIVES | SIZE_OBJECTIVES


def recorded_epochs(epochs: int, steps_per_epoch: int, pruning_end_step: int) -> range:
    """The epochs (1-based) after which a trial records its values: from the one in which
    its pruning window ends to the last but one."""
    return range(max(1, math.ceil(pruning_end_step / steps_per_epoch)), epochs)


def rung_epochs(recorded: range) -> tuple[int, ...]:
    """The recorded epochs at which a trial is judged: the first, and halfway through the
    epochs left.

    >>> rung_epochs(recorded_epochs(8, 36, 200))  # pruning ends in epoch 6 of 8
    (6, 7)
    """
    if not recorded:
        return ()
    final = recorded.start
    return tuple(sorted({final, final + math.ceil((recorded.stop - final) / 2)} & set(recorded)))


def planned_rung_epochs(epochs: int, fraction: float = PLANNED_RUNG) -> tuple[int, ...]:
    """The epoch after which `planned` judges every trial: the first by which `fraction` of
    them are done (never the last).

    >>> planned_rung_epochs(8), planned_rung_epochs(4), planned_rung_epochs(20), planned_rung_epochs(1)
    ((1,), (1,), (3,), ())
    """
    return (min(math.ceil(epochs * fraction), epochs - 1),) if epochs > 1 else ()


def rung_losses(objectives: Sequence[str], logs: Mapping[str, float], planned: bool = False) -> list[float]:
    """What a rung compares, as losses (smaller is better): -accuracy and -sparsity, the
    masks' (`pruned`) or the planned one with -progress towards it (`planned`)."""
    losses = []
    if ACCURACY_OBJECTIVES & set(objectives):
        losses.append(-float(logs["val_accuracy"]))
    if SIZE_OBJECTIVES & set(objectives):
        masks = float(logs.get("mask_sparsity", 0.0))
        if not planned:
            losses.append(-masks)
        else:
            target = float(logs.get("planned_sparsity", 0.0))
            losses += [-target, -(min(masks / target, 1.0) if target else 1.0)]  # tfmot rounds masks up
    return losses


def judge(
    epoch: int, record: Mapping[str, Any], peers: Sequence[Peer], min_accuracy: float | None,
    min_trials: int = MIN_TRIALS,
) -> EarlyStopped | None:
    """Why a trial with `record` after `epoch` should stop; None if it goes on. `peers`: the
    study's other running, complete and stopped trials, with the same rule's records
    (`sweep.stores.records.rung_peers`)."""
    key = str(epoch)
    at_rung = [peer.rungs[key] for peer in peers if key in peer.rungs]
    if len(at_rung) + 1 < min_trials:
        return None
    if min_accuracy is not None:
        gains = [peer.final_val_accuracy - peer.rungs[key]["val_accuracy"]
                 for peer in peers if peer.final_val_accuracy is not None and key in peer.rungs]
        best = record["val_accuracy"] + max(max(gains, default=0.0), 0.0)
        if gains and best < min_accuracy:
            return EarlyStopped(epoch, f"val_accuracy {record['val_accuracy']:.4f}, and no complete trial gained "
                                       f"more than {best - record['val_accuracy']:.4f} after this epoch: it cannot "
                                       f"reach min_accuracy {min_accuracy}", shortfall=min_accuracy - best)
    ranks = domination_ranks([record["losses"], *(r["losses"] for r in at_rung)])
    cutoff = sorted(ranks)[math.ceil(len(ranks) / ETA) - 1]
    if ranks[0] <= cutoff:
        return None
    return EarlyStopped(epoch, f"front {ranks[0] + 1} of the {len(ranks)} trials at this epoch; only fronts up "
                               f"to {cutoff + 1} (the best 1/{ETA}) go on")
