"""The one trainer. It owns a run: the run folder and config.json, seeding and every RNG state,
the optimizer, step decay and warmup, mixed precision and its scaler, the DDP wrap, sharded
validation, the BatchNorm broadcast, the non-finite loss stop, the progress bar, the metrics CSV
and plot, atomic last/best checkpoints, exact resume and the resumable-changes rule. A `Task`
(one per package of engine.tasks) supplies only what differs: its model, its dataset wrapper, one
training step returning named losses, validation returning named metrics, and which metric
picks best.pt.

Run folder: config.json, last.pt (after every epoch), best.pt (best validation metric; lowest
training loss without a validation set; a hard link to last.pt's file when written, so one copy
on disk), metrics.csv and metrics.png.

Under torchrun (WORLD_SIZE > 1) every process runs the same call: each trains on its shard
(DistributedSampler, `batch_size` images per process and step) with gradients averaged by
DistributedDataParallel; logged losses are means over all processes' batches. Validation is
sharded too and every process scores the gathered results, so all agree on best.pt. Only rank 0
writes files; a NaN/inf loss on any process stops all of them.

Randomness: augmentation is drawn per image from (seed, epoch, index), the shuffle from (seed,
epoch), and a step's learning rate is a function of the step count and epoch alone, so a resumed
run computes what an uninterrupted one would have."""

from __future__ import annotations

import math
import random
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ..models.compile import compile_model
from . import distributed
from .checkpoint import (
    atomic_copy,
    atomic_save,
    atomic_write_text,
    check_resumable,
    gather_rng_states,
    remove_stale_temporaries,
    restore_training_state,
    run_checkpoint,
    training_state,
)
from .config import RESUMABLE_CHANGES, RunConfig
from .logging import plot_history, progress, write_metrics_csv
from .sampling import train_loader, val_loader

WARMUP_FACTOR = 1e-3  # the warmup's first step runs at lr * WARMUP_FACTOR (torchvision's reference)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf. The step's update was not applied and no file was written
    for the epoch, so last.pt still holds the previous epoch. Under DDP every process raises it;
    `value` is this process's loss, finite where another process's was not (`elsewhere`)."""

    def __init__(self, epoch, step, global_step, value, what="loss", elsewhere=False):
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


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" is CUDA when available, else CPU; a CUDA device that is absent is an error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA device")
    return device


def autocast(device, amp: bool = False, bf16: bool = False):
    """The run's autocast: bfloat16 on any device with bf16, else float16 on CUDA with amp,
    else none (float32)."""
    device = torch.device(device)
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def make_optimizer(config: RunConfig, params, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum or Adam, with config.weight_decay."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr, weight_decay=config.weight_decay)


def make_scheduler(config: RunConfig, opt) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch decay: StepLR (step_size, gamma), or cosine annealing to 0 over
    config.epochs (the warmup scales the first steps on top of either)."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(config.epochs, 1))
    return torch.optim.lr_scheduler.StepLR(opt, config.step_size, config.gamma)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The multiplier of the step-decay learning rate at optimizer step `step` (0-based, counted
    over the whole run): WARMUP_FACTOR at step 0 rising linearly to 1 at step warmup_steps, 1
    from there on (torchvision's detection reference: factor * (1 - a) + a, a = step / warmup)."""
    if step >= warmup_steps:
        return 1.0
    a = step / warmup_steps
    return WARMUP_FACTOR * (1 - a) + a


def mean(total: float, count: float) -> float:
    return total / count if count else math.nan


class Task(ABC):
    """What a training task supplies. Subclass it, set the class attributes, override what
    differs, and register its package in engine.tasks. `self.config` is the run's config."""

    name: ClassVar[str] = ""  # "seg", "det": the command line's word
    title: ClassVar[str] = ""  # "segmentation": how messages name the task
    description: ClassVar[str] = ""  # `fastdet train <name>`'s one-line help
    config_class: ClassVar[type] = RunConfig
    checkpoint_format: ClassVar[str] = ""
    reads_unversioned: ClassVar[bool] = False  # checkpoints without "format" are this task's
    loss_names: ClassVar[tuple] = ("loss",)  # named means of the steps' losses, per epoch
    loss_key: ClassVar[str] = "loss"  # the progress bar's loss; best.pt without validation
    metric_names: ClassVar[tuple] = ()  # named validation metrics, per epoch
    best_metric: ClassVar[str] = ""  # the metric (higher is better) that picks best.pt
    val_batch_size: ClassVar[int | None] = None  # None: config.batch_size
    drop_single: ClassVar[bool] = False  # drop a last training batch of one image (BatchNorm)
    collate: ClassVar = None  # the loaders' collate_fn (None: torch's default)
    plot: ClassVar[tuple] = ((), ())  # metrics.png: ((loss keys, labels), (score keys, labels))

    def __init__(self, config: RunConfig):
        self.config = config

    @property
    def columns(self) -> tuple:
        """The metrics CSV's columns."""
        return ("epoch", *self.loss_names, *self.metric_names, "lr", "seconds", "data_wait")

    @staticmethod
    def epoch_line(row: dict) -> str:
        """One epoch's row as the command line prints it."""
        return ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float))

    def prepare(self, config, train_set, ckpt):
        """The config the run uses (e.g. settings taken from the data)."""
        return config

    @abstractmethod
    def build_model(self, config, pretrained: bool) -> torch.nn.Module:
        """The network; pretrained=False: the weights come from a checkpoint (read no file)."""

    def trainable(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the main optimizer trains (and DDP wraps)."""
        return model

    @abstractmethod
    def dataset(self, data, augment: bool):
        """The training tensors of a dataset of sample dicts; has set_epoch(epoch)."""

    def setup(self, trainer: Trainer) -> None:
        """Anything beyond the model, optimizer and loaders (e.g. a discriminator's)."""
        return None  # an optional hook

    def begin_epoch(self, epoch: int) -> dict:
        """Columns of the epoch's row the task decides before it trains (e.g. a GAN phase)."""
        return {}

    def decays_lr(self, row: dict) -> bool:
        """Whether this epoch counts towards the step decay."""
        return True

    @abstractmethod
    def train_step(self, trainer: Trainer, batch, where) -> dict:
        """One update; {loss name: float} (names of loss_names; a name left out this step is
        not counted in its mean)."""

    @abstractmethod
    def validate(self, trainer: Trainer) -> dict:
        """{metric name: float} over trainer.val_loader (this process's shard)."""

    def finish(self, trainer: Trainer) -> None:
        """After the last epoch, on the main process only: what is chosen from the finished run
        (e.g. the detector's operating point, stored in best.pt)."""
        return None  # an optional hook

    def state_dict(self) -> dict:
        """Extra checkpoint entries (tensors and plain values)."""
        return {}

    def load_state_dict(self, ckpt: dict) -> None:
        """Restores what state_dict added to the checkpoint."""
        return None  # an optional hook


class Trainer:
    """State of one run of `task` (its config is the run's); `fit` runs the remaining epochs,
    `close` leaves the process group it joined (under torchrun)."""

    def __init__(self, task: Task, train_set, val_set, out_dir, resume: bool = False):
        self.task = task
        config = task.config
        config.validate()
        if len(train_set) == 0:
            raise ValueError(f"train {self.task.name}: the training set is empty")
        self.out = Path(out_dir)
        device = resolve_device(config.device)
        self.dist = distributed.setup(device)
        try:  # a failure here must not leave the process group joined
            self.device = distributed.device_for(device, self.dist)
            self._init(config, train_set, val_set, resume)
        except BaseException:
            self.close()
            raise

    def _init(self, config: RunConfig, train_set, val_set, resume: bool) -> None:
        task = self.task
        ckpt = run_checkpoint(self.out, resume)
        if ckpt is not None and ckpt.get("format") != task.checkpoint_format:
            raise ValueError(f"{self.out / 'last.pt'}: not a {task.checkpoint_format} checkpoint")
        config = task.config = task.prepare(config, train_set, ckpt)
        if ckpt:  # settings added since the checkpoint was written count as their defaults
            saved = type(config).from_dict(ckpt["config"]).to_dict()
            check_resumable(config, saved, RESUMABLE_CHANGES)
        self.config = config
        # float16 autocast (and its loss scaling) on CUDA; bf16 autocast replaces it anywhere
        self.amp = bool(config.amp) and self.device.type == "cuda" and not config.bf16
        _seed_everything(config.seed)
        if config.deterministic:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        self.model = task.build_model(config, pretrained=ckpt is None).to(self.device)
        if config.channels_last:  # 4-D weights only; checkpoints load into either layout
            self.model.to(memory_format=torch.channels_last)
        if config.compile:  # in place: checkpoints keep their keys; breaks allowed, not fatal
            compile_model(self.model, fullgraph=False)
        params = [p for p in task.trainable(self.model).parameters() if p.requires_grad]
        self.opt = make_optimizer(config, params, config.lr)
        self.sched = make_scheduler(config, self.opt)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self._loaders(train_set, val_set)
        self.epoch, self.global_step, self.history = 0, 0, []
        self.best, self.best_epoch = -math.inf, 0
        self.train_model = self.wrap(task.trainable(self.model))
        task.setup(self)
        if ckpt:  # under DDP each process resumes its own sampling stream
            task.load_state_dict(ckpt)
            restore_training_state(self, ckpt)
        if self.dist.is_main:  # a run killed mid-write left its temporary files behind
            remove_stale_temporaries(self.out)
            atomic_write_text(self.out / "config.json", config.to_json())

    def _loaders(self, train_set, val_set) -> None:
        task, cfg, pin = self.task, self.config, self.device.type == "cuda"
        self.train_data = task.dataset(train_set, augment=True)
        self.train_loader = train_loader(
            self.train_data, cfg, self.dist, pin, task.collate, task.drop_single
        )
        self.val_loader, self.val_set = None, val_set
        if val_set is not None and len(val_set):
            data = task.dataset(val_set, augment=False)
            size = task.val_batch_size or cfg.batch_size
            self.val_loader = val_loader(data, size, cfg, self.dist, pin, task.collate)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP(module) under torchrun (rank 0's weights broadcast here, gradients averaged per
        step), else the module itself."""
        if not self.dist.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def close(self) -> None:
        distributed.teardown(self.dist)

    # ------------------------------------------------------------------ epochs

    def fit(self) -> list[dict]:
        for epoch in range(self.epoch, self.config.epochs):
            start = time.perf_counter()
            lr = self.opt.param_groups[0]["lr"]  # the step decay's; warmup scales early steps
            self.train_loader.sampler.set_epoch(epoch)
            self.train_data.set_epoch(epoch)
            extras = self.task.begin_epoch(epoch)
            row = {"epoch": epoch + 1, **self._train_epoch(epoch)}
            if self.task.decays_lr(extras):
                self.sched.step()
            row.update(self._validate(), lr=lr, seconds=time.perf_counter() - start, **extras)
            self.history.append(row)
            self.epoch = epoch + 1
            self._save(row)
        if self.dist.is_main:  # the hook leaves the run's RNG streams (resume checks them) alone
            cuda = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                self.task.finish(self)
        distributed.barrier()
        return self.history

    def _train_epoch(self, epoch: int) -> dict:
        """The mean of each named loss over the epoch's batches of all processes (NaN for a
        loss no step reported), and data_wait: the share of this process's training time spent
        waiting for the next batch (reading and augmenting, where workers do not keep up)."""
        names = self.task.loss_names
        sums, counts = [0.0] * len(names), [0.0] * len(names)
        bar = progress(
            self.train_loader,
            len(self.train_loader),
            f"epoch {epoch + 1}/{self.config.epochs}",
            self.config.progress and self.dist.is_main,
        )
        started = mark = time.perf_counter()
        waited = 0.0
        for step, batch in enumerate(bar, start=1):
            waited += time.perf_counter() - mark
            losses = self.task.train_step(self, batch, (epoch + 1, step, self.global_step + 1))
            for i, k in enumerate(names):
                if k in losses:
                    sums[i] += losses[k]
                    counts[i] += 1
            self.global_step += 1
            bar.set_postfix(loss=f"{losses[self.task.loss_key]:.4f}")
            mark = time.perf_counter()
        bar.close()
        total = distributed.all_reduce_sum(sums + counts, self.device)
        losses = {k: mean(total[i], total[len(names) + i]) for i, k in enumerate(names)}
        return {**losses, "data_wait": waited / max(time.perf_counter() - started, 1e-9)}

    def _validate(self) -> dict:
        """The task's metrics on the validation set (NaN without one). Under DDP each process
        scores its shard with rank 0's BatchNorm statistics (the model rank 0 saves)."""
        if self.val_loader is None:
            return {k: math.nan for k in self.task.metric_names}
        if self.dist.enabled:  # BatchNorm running statistics drift apart between processes
            distributed.broadcast_buffers(self.model)
        return self.task.validate(self)

    # ------------------------------------------------------------------ steps

    def autocast(self):
        return autocast(self.device, self.amp, self.config.bf16)

    def check_loss(self, loss: torch.Tensor, where, what: str = "loss", failure=None) -> float:
        """The loss as a float. Raises NonFiniteLossError (epoch, step, global step = `where`)
        on every process when any process's loss is NaN or inf, so all stop at the same step;
        call it before the backward pass, so no process waits for the others' gradients.
        failure: the error of a forward pass that refused NaN/inf input (named in the message)."""
        if failure is not None:
            what = f"{what} (the forward pass failed: {failure})"
        value = float(loss.detach())
        here = not math.isfinite(value)
        anywhere = distributed.any_true(here, self.device) if self.dist.enabled else here
        if anywhere:
            raise NonFiniteLossError(*where, value, what, elsewhere=not here) from failure
        return value

    def update(self, loss: torch.Tensor, opt=None, scaler=None, warmup: bool = True) -> None:
        """Backward and one optimizer step (the main optimizer by default) at the step decay's
        rate times warmup_factor(global_step). The optimizer keeps the step decay's rate between
        steps, so the scheduler and checkpoints hold no warmup state."""
        opt, scaler = opt or self.opt, scaler or self.scaler
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.config.clip_grad is not None:
            scaler.unscale_(opt)  # clip the true gradients, not the loss-scaled ones
            params = [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad)
        factor = warmup_factor(self.global_step, self.config.warmup_steps) if warmup else 1.0
        base = [g["lr"] for g in opt.param_groups]
        if factor != 1.0:
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * factor
        try:
            scaler.step(opt)
        finally:
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr
        scaler.update()

    # ------------------------------------------------------------------ files

    def _save(self, row: dict) -> None:
        """last.pt every epoch, best.pt when the score improves, the CSV and the plot; rank 0
        only, each file replaced atomically. The checkpoint holds every process's RNG states
        (each samples its own data and anchors). Other processes wait so none runs ahead."""
        task = self.task
        val = self.val_loader is not None
        score = row[task.best_metric] if val else -row[task.loss_key]
        improved = not math.isnan(score) and score > self.best
        if improved:
            self.best, self.best_epoch = score, row["epoch"]
        ranks = gather_rng_states(self.dist)
        if self.dist.is_main:
            ckpt = {**training_state(self, task.checkpoint_format, ranks), **task.state_dict()}
            atomic_save(ckpt, self.out / "last.pt")
            if improved:  # the same bytes: linked, not written twice
                atomic_copy(self.out / "last.pt", self.out / "best.pt")
            write_metrics_csv(self.out / "metrics.csv", self.history, task.columns)
            plot_history(self.out / "metrics.png", self.history, *task.plot)
        distributed.barrier()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(task: Task, train_set, val_set=None, out_dir=None, resume=False) -> list[dict]:
    """Trains `task` on its config (task.config); returns the history (one dict per epoch, the
    task's CSV columns).

    train_set, val_set: datasets of sample dicts in the datasets' format, untransformed (the
    task resizes, crops and flips); val_set may be None. out_dir: the run folder (required).
    resume=True continues from out_dir/last.pt with every state restored (model, optimizers,
    schedulers, scalers, RNGs, history); only RESUMABLE_CHANGES may differ from the saved
    config. Without resume a folder holding last.pt is refused. Under torchrun each process
    calls this with the same arguments; rank 0 writes the files.
    Raises NonFiniteLossError (a FloatingPointError) when a loss is NaN or inf."""
    if out_dir is None:
        raise ValueError("train: out_dir is required (the run folder)")
    trainer = Trainer(task, train_set, val_set, Path(out_dir), resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()
