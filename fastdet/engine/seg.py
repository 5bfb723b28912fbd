"""The segmentation training loop: U-Net / FPN with SGD or Adam and step decay, U-Net+GAN with
per-batch or per-epoch alternation, mixed precision on CUDA, DDP under torchrun, per-epoch
metrics, atomic checkpoints and exact resume.

Run folder (`out_dir`): config.json, last.pt (after every epoch), best.pt (best validation Dice;
lowest training loss without a validation set), metrics.csv and metrics.png."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ..models import losses
from ..models.segmentation import binarize
from . import distributed
from .checkpoint import (
    atomic_save,
    atomic_write_text,
    check_resumable,
    gather_rng_states,
    restore_training_state,
    run_checkpoint,
    training_state,
)
from .config import TrainConfig
from .data import SegTensors, standardize, train_loader, val_loader
from .logging import plot_history, progress, write_metrics_csv
from .loop import check_loss, make_optimizer, mean, run_to_end
from .models import (
    LOSS_FUNCTIONS,
    build_model,
    generator_of,
    load_generator_weights,
    resolve_device,
)

CHECKPOINT_FORMAT = "fastdet.seg.v1"
# Settings a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = {"epochs", "progress", "num_workers", "device", "extra", "init_checkpoint"}


def train_segmentation(
    config: TrainConfig, train_set, val_set=None, out_dir=None, resume: bool = False
) -> list[dict]:
    """Trains a segmentation model; returns the history (one dict per epoch, CSV columns).

    train_set, val_set: datasets of sample dicts ({"image" [C, H, W], "mask" [H, W], ...}),
    untransformed (the engine resizes, crops and flips). val_set may be None.
    out_dir: the run folder (required). resume=True continues from out_dir/last.pt with all
    state restored (model, optimizers, schedulers, scalers, RNGs, history); config.epochs may
    be raised, other settings must match the checkpoint's. Without resume, a folder already
    holding last.pt is refused. Under torchrun (WORLD_SIZE > 1) each process calls this with the
    same arguments; rank 0 writes the files.
    Raises NonFiniteLossError (a FloatingPointError) when a loss is NaN or inf."""
    if out_dir is None:
        raise ValueError("train_segmentation: out_dir is required (the run folder)")
    return run_to_end(SegTrainer(config, train_set, val_set, Path(out_dir), resume))


class SegTrainer:
    """State of one run; `fit` runs the remaining epochs."""

    def __init__(self, config: TrainConfig, train_set, val_set, out_dir: Path, resume: bool):
        config.validate()
        if len(train_set) == 0:
            raise ValueError("train_segmentation: the training set is empty")
        self.out = out_dir
        device = resolve_device(config.device)
        self.dist = distributed.setup(device)
        try:  # a failure here must not leave the process group joined
            self.device = distributed.device_for(device, self.dist)
            self._init(config, train_set, val_set, resume)
        except BaseException:
            self.close()
            raise

    def _init(self, config: TrainConfig, train_set, val_set, resume: bool) -> None:
        ckpt = self._resume_checkpoint(resume)
        if config.in_channels is None:
            ch = (
                ckpt["config"]["in_channels"]
                if ckpt
                else int(torch.as_tensor(train_set[0]["image"]).shape[0])
            )
            config = dataclasses.replace(config, in_channels=ch)
        if ckpt:
            check_resumable(config, ckpt["config"], RESUMABLE_CHANGES)
        self.config = config
        self.amp = bool(config.amp) and self.device.type == "cuda"
        self._seed_everything(config.seed)
        self._build(train_set, val_set)
        self.epoch, self.global_step, self.history = 0, 0, []
        self.best, self.best_epoch = -math.inf, 0
        if ckpt:
            self._restore(ckpt)
        elif config.init_checkpoint:
            load_generator_weights(self.model, config.init_checkpoint)
        if self.dist.is_main:
            atomic_write_text(self.out / "config.json", config.to_json())

    # ------------------------------------------------------------------ setup

    def _resume_checkpoint(self, resume: bool):
        return run_checkpoint(self.out, resume)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build(self, train_set, val_set) -> None:
        cfg, dev = self.config, self.device
        if cfg.deterministic:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        self.model = build_model(cfg).to(dev)
        self.gan = cfg.gan_mode != "none"
        self.gen = generator_of(self.model)
        self.opt = make_optimizer(cfg, self.gen.parameters(), cfg.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, cfg.step_size, cfg.gamma)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp)
        if self.gan:
            disc = self.model.discriminator
            self.d_opt = torch.optim.Adam(disc.parameters(), cfg.d_lr, betas=(0.5, 0.999))
            self.d_scaler = torch.amp.GradScaler(dev.type, enabled=self.amp)
        self.gen_train, self.disc_train = self.gen, getattr(self.model, "discriminator", None)
        if self.dist.enabled:  # gradients averaged over processes; rank 0's weights broadcast
            ids = [dev.index] if dev.type == "cuda" else None
            self.gen_train = DDP(self.gen, device_ids=ids)
            if self.gan:
                self.disc_train = DDP(self.model.discriminator, device_ids=ids)
        self.seg_loss = LOSS_FUNCTIONS[cfg.loss]
        pin = dev.type == "cuda"
        self.train_data = SegTensors(train_set, cfg, augment=True)
        self.train_loader = train_loader(self.train_data, cfg, self.dist, pin)
        self.val_loader = (
            val_loader(SegTensors(val_set, cfg, augment=False), cfg, self.dist, pin)
            if val_set is not None and len(val_set)
            else None
        )

    def _restore(self, ckpt: dict) -> None:
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.out / 'last.pt'}: not a {CHECKPOINT_FORMAT} checkpoint")
        if self.gan:
            self.d_opt.load_state_dict(ckpt["d_optimizer"])
            self.d_scaler.load_state_dict(ckpt["d_scaler"])
        restore_training_state(self, ckpt)

    def close(self) -> None:
        distributed.teardown(self.dist)

    # ------------------------------------------------------------------ epochs

    def fit(self) -> list[dict]:
        for epoch in range(self.epoch, self.config.epochs):
            start = time.perf_counter()
            phase = self._phase(epoch)
            lr = self.opt.param_groups[0]["lr"]
            self.train_data.set_epoch(epoch)
            self.train_loader.sampler.set_epoch(epoch)
            train_loss, d_loss = self._train_epoch(epoch, phase)
            val_loss, val_iou, val_dice = self._validate()
            if phase != "d":  # the step decay counts the epochs that trained G
                self.sched.step()
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_iou": val_iou,
                "val_dice": val_dice,
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
            if self.gan:
                row.update(phase=phase, d_loss=d_loss)
            self.history.append(row)
            self.epoch = epoch + 1
            self._save(row)
        return self.history

    def _phase(self, epoch: int) -> str:
        """ "seg" (no GAN), "gan" (D then G each batch), or "d" / "g" (alternating epochs,
        starting with D as the original did, from a trained U-Net)."""
        mode = self.config.gan_mode
        if mode == "none":
            return "seg"
        if mode == "batch":
            return "gan"
        return "d" if epoch % 2 == 0 else "g"

    def _train_epoch(self, epoch: int, phase: str) -> tuple[float, float]:
        """Mean segmentation loss and mean discriminator loss (NaN when D did not train)."""
        sums = [0.0, 0.0, 0.0, 0.0]  # seg loss, batches, D loss, D batches
        bar = progress(
            self.train_loader,
            len(self.train_loader),
            f"epoch {epoch + 1}/{self.config.epochs}",
            self.config.progress and self.dist.is_main,
        )
        for step, (x, y) in enumerate(bar, start=1):
            x = standardize(x.to(self.device, non_blocking=True))
            y = y.to(self.device, non_blocking=True)
            where = (epoch + 1, step, self.global_step + 1)
            if phase in ("gan", "d"):
                d_loss, seg = self._d_step(x, y, where)
                sums[2] += d_loss
                sums[3] += 1
            if phase in ("seg", "gan", "g"):
                seg = self._g_step(x, y, where)
            sums[0] += seg
            sums[1] += 1
            self.global_step += 1
            bar.set_postfix(loss=f"{seg:.4f}")
        bar.close()
        total = distributed.all_reduce_sum(sums, self.device)
        return mean(total[0], total[1]), mean(total[2], total[3])

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

    def _check(self, loss: torch.Tensor, where, what: str = "loss") -> float:
        """The loss as a float; raises on every process if any process has NaN/inf."""
        return check_loss(loss, where, what, self.dist, self.device)

    def _g_step(self, x, y, where) -> float:
        """One update of the segmenting network; with a GAN, the generator objective
        seg + lambda * -log D(binarize(G(x))) with D frozen (eval mode, not stepped)."""
        self.gen.train()
        with self._autocast():
            logits = self.gen_train(x)
        seg = self.seg_loss(logits.float(), y)
        loss = seg
        if self.gan:
            self.model.discriminator.eval()
            with self._autocast():
                d_fake = self.disc_train(x, binarize(torch.sigmoid(logits.float())))
            loss = losses.gan_generator_loss(seg, d_fake.float(), self.config.gan_lambda)
        self._check(loss, where, "generator loss" if self.gan else "loss")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(seg.detach())

    def _d_step(self, x, y, where) -> tuple[float, float]:
        """One discriminator update on real (ground-truth) and fake (binarized prediction)
        masks, with the generator frozen in eval mode. Returns (D loss, seg loss of G)."""
        self.gen.eval()
        self.model.discriminator.train()
        with torch.no_grad(), self._autocast():
            logits = self.gen(x).float()
        seg = float(self.seg_loss(logits, y))
        fake = binarize(torch.sigmoid(logits))
        with self._autocast():  # one forward for both halves (one DDP reduction per step)
            d = self.disc_train(torch.cat([x, x]), torch.cat([y, fake])).float()
        loss = losses.discriminator_adversarial(d[: len(x)], d[len(x) :])
        value = self._check(loss, where, "discriminator loss")
        self.d_opt.zero_grad(set_to_none=True)
        self.d_scaler.scale(loss).backward()
        self.d_scaler.step(self.d_opt)
        self.d_scaler.update()
        return value, seg

    @torch.no_grad()
    def _validate(self) -> tuple[float, float, float]:
        """Mean loss, IoU and Dice over validation images (prediction: logit > 0; an image
        with empty target and empty prediction scores 1). Under DDP each process scores its
        shard with rank 0's BatchNorm statistics (the model rank 0 saves)."""
        if self.val_loader is None:
            return math.nan, math.nan, math.nan
        if self.dist.enabled:  # BatchNorm running statistics drift apart between processes
            distributed.broadcast_buffers(self.model)
        self.gen.eval()
        sums = [0.0, 0.0, 0.0, 0.0]
        for x, y in self.val_loader:
            x = standardize(x.to(self.device))
            y = y.to(self.device)
            with self._autocast():
                logits = self.gen(x).float()
            pred = logits > 0
            truth = y > 0.5
            tp = (pred & truth).sum().item()
            fp = (pred & ~truth).sum().item()
            fn = (~pred & truth).sum().item()
            sums[0] += float(self.seg_loss(logits, y))
            sums[1] += tp / (tp + fp + fn) if tp + fp + fn else 1.0
            sums[2] += 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
            sums[3] += 1
        total = distributed.all_reduce_sum(sums, self.device)
        n = total[3]
        return mean(total[0], n), mean(total[1], n), mean(total[2], n)

    # ------------------------------------------------------------------ files

    def _save(self, row: dict) -> None:
        """last.pt every epoch, best.pt when the score improves, the CSV and the plot; rank 0
        only, each file replaced atomically. The checkpoint holds every process's RNG states.
        Other processes wait so none runs ahead."""
        score = row["val_dice"] if self.val_loader is not None else -row["train_loss"]
        improved = not math.isnan(score) and score > self.best
        if improved:
            self.best, self.best_epoch = score, row["epoch"]
        ranks = gather_rng_states(self.dist)
        if self.dist.is_main:
            ckpt = self._checkpoint(ranks)
            atomic_save(ckpt, self.out / "last.pt")
            if improved:
                atomic_save(ckpt, self.out / "best.pt")
            write_metrics_csv(self.out / "metrics.csv", self.history, self.gan)
            plot_history(self.out / "metrics.png", self.history)
        distributed.barrier()

    def _checkpoint(self, rng_ranks=None) -> dict:
        ckpt = training_state(self, CHECKPOINT_FORMAT, rng_ranks)
        if self.gan:
            ckpt["d_optimizer"] = self.d_opt.state_dict()
            ckpt["d_scaler"] = self.d_scaler.state_dict()
        return ckpt
