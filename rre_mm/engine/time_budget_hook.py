"""Stop training once a wall-clock budget is spent."""
import time
from typing import Optional

import torch
from mmengine.dist import broadcast, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class TimeBudgetHook(Hook):
    """Stop training when its wall time exceeds ``max_minutes``.

    The check runs after every training iteration and sets the loop's
    ``stop_training`` flag, which MMEngine 0.10's ``IterBasedTrainLoop`` reads
    before the next iteration and ``EpochBasedTrainLoop`` only before the next
    epoch. The learning-rate schedule is not shortened, so a run cut early
    ends at a higher learning rate than its schedule planned.

    In distributed training rank 0 decides and broadcasts the decision, so
    all ranks stop after the same iteration.

    Args:
        max_minutes (float): Wall-clock budget for training, in minutes,
            counted from ``before_train``, so model building and
            checkpoint loading are not included.
    """

    priority = 'VERY_LOW'

    def __init__(self, max_minutes: float) -> None:
        if not float(max_minutes) > 0:
            raise ValueError(
                f'TimeBudgetHook expects max_minutes > 0, got {max_minutes!r}.')
        self.max_minutes = float(max_minutes)
        self._start: Optional[float] = None
        self.stopped_at_iter: Optional[int] = None

    def before_train(self, runner) -> None:
        self._start = time.monotonic()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self._start is None or self.stopped_at_iter is not None:
            return
        elapsed_minutes = (time.monotonic() - self._start) / 60.0
        over_budget = elapsed_minutes >= self.max_minutes
        if get_world_size() > 1:
            # Ranks that stop at different iterations would hang in DDP.
            flag = torch.tensor([float(over_budget)],
                                device=next(runner.model.parameters()).device)
            broadcast(flag, src=0)
            over_budget = bool(flag.item())
        if not over_budget:
            return
        self.stopped_at_iter = runner.iter + 1
        runner.train_loop.stop_training = True
        runner.logger.warning(
            f'Time budget of {self.max_minutes:g} min spent after iteration '
            f'{self.stopped_at_iter} of {runner.max_iters}; stopping training.')
