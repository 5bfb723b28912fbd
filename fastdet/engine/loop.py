"""What the segmentation and detection trainers share around each step: the non-finite loss
stop (agreed by every process under DDP), the optimizer of a config, running a trainer to the
end (leaving the process group it joined), and a mean that is NaN over nothing."""

from __future__ import annotations

import math

import torch

from . import distributed


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf. The step's update was not applied and no file was written
    for the epoch, so last.pt still holds the previous epoch. Under DDP every process raises it;
    `value` is this process's loss, finite where another process's was not (`elsewhere`)."""

    def __init__(
        self,
        epoch: int,
        step: int,
        global_step: int,
        value: float,
        what: str = "loss",
        elsewhere: bool = False,
    ):
        self.epoch, self.step, self.global_step, self.value = epoch, step, global_step, value
        self.elsewhere = elsewhere
        state = (
            f"{what} is NaN or inf on another process (on this one it is {value})"
            if elsewhere
            else f"{what} is {value}"
        )
        super().__init__(
            f"{state} at epoch {epoch}, step {step} of the epoch (global "
            f"step {global_step}); training stopped before this step's update. "
            f"Lower the learning rate, check the data for NaN/inf, or turn off "
            f"mixed precision."
        )


def check_loss(loss: torch.Tensor, where, what: str, dist_info, device, failure=None) -> float:
    """The loss as a float. Raises NonFiniteLossError (epoch, step, global step = `where`) on
    every process when any process's loss is NaN or inf, so all stop at the same step; call it
    before the backward pass, so no process waits for the others' gradients."""
    value = float(loss.detach())
    here = not math.isfinite(value)
    anywhere = distributed.any_true(here, device) if dist_info.enabled else here
    if anywhere:
        raise NonFiniteLossError(*where, value, what, elsewhere=not here) from failure
    return value


def make_optimizer(config, params, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum or Adam, with config.weight_decay (TrainConfig and DetConfig alike)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr, weight_decay=config.weight_decay)


def mean(total: float, count: float) -> float:
    return total / count if count else math.nan


def run_to_end(trainer) -> list[dict]:
    """trainer.fit(), then trainer.close() whatever happened (under torchrun: leaves the group)."""
    try:
        return trainer.fit()
    finally:
        trainer.close()
