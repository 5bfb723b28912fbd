"""The segmentation task: U-Net / FPN with SGD or Adam and step decay (the original work: SGD
with momentum 0.9, lr 0.01 halved every 10 epochs, BCE), and U-Net+GAN with per-batch or
per-epoch alternation of the discriminator and the generator. The trainer (engine.trainer) runs
it; best.pt is the best validation Dice."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ....models import losses
from ....models.segmentation import MODELS, binarize, segmentation_model
from ... import distributed
from ...checkpoint import load_checkpoint, model_state
from ...config import RunConfig, setting
from ...trainer import Task, mean
from .data import SegTensors, standardize

LOSSES = ("bce", "focal", "dice", "bce_dice")
GAN_MODES = ("none", "batch", "epoch")
LOSS_FUNCTIONS = {
    "bce": losses.bce,
    "focal": losses.focal,
    "dice": losses.dice,
    "bce_dice": losses.bce_dice,
}
CHECKPOINT_FORMAT = "fastdet.seg.v1"
COLUMNS = ("epoch", "train_loss", "val_loss", "val_iou", "val_dice", "lr", "seconds", "data_wait")
GAN_COLUMNS = ("phase", "d_loss")


@dataclasses.dataclass
class SegConfig(RunConfig):
    """Settings of a segmentation run (the shared ones in RunConfig). weights: a U-Net engine
    checkpoint or state_dict to start the network (U-Net+GAN: its generator) from;
    weights_backbone: a torchvision-format ResNet state_dict for the fpn_* encoders."""

    task = "seg"

    model: str = setting("unet", "segmentation network", choices=tuple(MODELS))
    in_channels: int | None = setting(None, "image channels (default: the first training image's)")
    depth: int = setting(4, "U-Net poolings (unet, unet_gan)")
    width: int = setting(64, "U-Net first-level channels (unet, unet_gan)")
    d_width: int = setting(32, "discriminator first-layer channels (unet_gan)")
    loss: str = setting("bce", "segmentation loss", choices=LOSSES)
    size: int = setting(256, "training crop side (after the shorter-side resize)")
    resize: bool = setting(True, "scale the shorter side to --size before cropping")
    gan_mode: str = setting(
        "none", "U-Net+GAN schedule: D then G each batch, or D/G epochs", choices=GAN_MODES
    )
    gan_lambda: float = setting(0.1, "weight of the adversarial term in the generator's loss")
    d_lr: float = setting(1e-4, "discriminator's Adam learning rate")
    hflip: float = setting(
        0.5,
        "probability of a left-right flip of a training crop",
        metavar="P",
        switches=(("no-hflip", 0.0, "no random left-right flips"),),
    )
    vflip: float = setting(
        0.5,
        "probability of a top-bottom flip of a training crop",
        metavar="P",
        switches=(("no-vflip", 0.0, "no random top-bottom flips"),),
    )
    weights: str | None = setting(
        None,
        "U-Net checkpoint or state_dict to start the network (unet_gan: its generator) from",
        aliases=("init-checkpoint",),
    )
    weights_backbone: str | None = setting(
        None,
        "torchvision-format ResNet state_dict file for the fpn_* encoders",
        aliases=("encoder-weights",),
    )

    def validate(self) -> None:
        super().validate()
        for name in ("size", "depth", "width", "d_width"):
            self._check_at_least(name, 1)
        if self.in_channels is not None:
            self._check_at_least("in_channels", 1)
        if not self.d_lr > 0:
            raise ValueError(f"SegConfig.d_lr must be > 0, got {self.d_lr!r}")
        if self.gan_mode != "none" and self.model != "unet_gan":
            raise ValueError(
                f"SegConfig.gan_mode={self.gan_mode!r} needs model 'unet_gan', got {self.model!r}"
            )


def build_model(config: SegConfig, pretrained: bool = True) -> nn.Module:
    """The network named by config.model with one output channel (foreground logits);
    pretrained: read config.weights_backbone and config.weights (a fresh run; a resumed or
    loaded one takes its weights from the checkpoint)."""
    model = segmentation_model(
        config.model,
        config.in_channels or 1,
        depth=config.depth,
        width=config.width,
        d_width=config.d_width,
        weights=config.weights_backbone if pretrained else None,
    )
    if pretrained and config.weights:
        load_generator_weights(model, config.weights)
    return model


def generator_of(model: nn.Module) -> nn.Module:
    """The segmenting network: U-Net+GAN's generator, or the model itself."""
    return getattr(model, "generator", model)


def load_generator_weights(model: nn.Module, path) -> None:
    """Starts U-Net+GAN's generator (or a plain model) from a U-Net checkpoint: an engine
    checkpoint of a unet or unet_gan run, or a bare U-Net state_dict."""
    state = model_state(load_checkpoint(path))
    if any(k.startswith("generator.") for k in state):
        state = {k[len("generator.") :]: v for k, v in state.items() if k.startswith("generator.")}
    target = generator_of(model)
    try:
        target.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{path}: does not fit the {type(target).__name__} of this config "
            f"(depth, width and in_channels must match): {e}"
        ) from e


class SegTask(Task):
    """Segmentation on the trainer: one loss per batch (BCE, focal, Dice, BCE + Dice) or the
    GAN's discriminator and generator steps; validation loss, IoU and Dice."""

    name = "seg"
    title = "segmentation"
    description = "train a segmentation model (U-Net, FPN, U-Net+GAN)"
    config_class = SegConfig
    checkpoint_format = CHECKPOINT_FORMAT
    reads_unversioned = True  # the first segmentation engine stored no format
    loss_key = "train_loss"
    metric_names = ("val_loss", "val_iou", "val_dice")
    best_metric = "val_dice"
    val_batch_size = 1  # validation images may differ in size
    drop_single = True
    plot = (
        ("Loss", (("train_loss", "train"), ("val_loss", "validation"))),
        ("Validation", (("val_dice", "Dice"), ("val_iou", "IoU"))),
    )

    def __init__(self, config: SegConfig):
        super().__init__(config)
        self.gan = config.gan_mode != "none"
        self.loss_names = ("train_loss", "d_loss") if self.gan else ("train_loss",)
        self.phase = "seg"

    @property
    def columns(self) -> tuple:
        return COLUMNS + (GAN_COLUMNS if self.gan else ())

    @staticmethod
    def epoch_line(row: dict) -> str:
        return (
            f"train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"val IoU {row['val_iou']:.3f}, val Dice {row['val_dice']:.3f}"
        )

    def prepare(self, config, train_set, ckpt):
        if config.in_channels is not None:
            return config
        ch = (
            ckpt["config"]["in_channels"]
            if ckpt
            else int(torch.as_tensor(train_set[0]["image"]).shape[0])
        )
        return dataclasses.replace(config, in_channels=ch)

    def build_model(self, config, pretrained):
        return build_model(config, pretrained)

    def trainable(self, model):
        return generator_of(model)

    def dataset(self, data, augment):
        return SegTensors(data, self.config, augment)

    def setup(self, trainer) -> None:
        cfg = self.config
        self.seg_loss = LOSS_FUNCTIONS[cfg.loss]
        self.gen, self.gen_train = generator_of(trainer.model), trainer.train_model
        if self.gan:
            disc = self.disc = trainer.model.discriminator
            self.d_opt = torch.optim.Adam(disc.parameters(), cfg.d_lr, betas=(0.5, 0.999))
            self.d_scaler = torch.amp.GradScaler(trainer.device.type, enabled=trainer.amp)
            self.disc_train = trainer.wrap(disc)

    def begin_epoch(self, epoch: int) -> dict:
        """ "seg" (no GAN), "gan" (D then G each batch), or "d" / "g" (alternating epochs,
        starting with D as the original did, from a trained U-Net)."""
        mode = self.config.gan_mode
        if mode == "none":
            self.phase = "seg"
            return {}
        self.phase = "gan" if mode == "batch" else ("d" if epoch % 2 == 0 else "g")
        return {"phase": self.phase}

    def decays_lr(self, row: dict) -> bool:
        return self.phase != "d"  # the step decay counts the epochs that trained G

    def train_step(self, trainer, batch, where) -> dict:
        x, y = batch
        x = standardize(x.to(trainer.device, non_blocking=True))
        y = y.to(trainer.device, non_blocking=True)
        out = {}
        if self.phase in ("gan", "d"):
            out["d_loss"], seg = self._d_step(trainer, x, y, where)
        if self.phase in ("seg", "gan", "g"):
            seg = self._g_step(trainer, x, y, where)
        out["train_loss"] = seg
        return out

    def _g_step(self, trainer, x, y, where) -> float:
        """One update of the segmenting network; with a GAN, the generator objective
        seg + lambda * -log D(binarize(G(x))) with D frozen (eval mode, not stepped)."""
        self.gen.train()
        with trainer.autocast():
            logits = self.gen_train(x)
        seg = self.seg_loss(logits.float(), y)
        loss = seg
        if self.gan:
            self.disc.eval()
            with trainer.autocast():
                d_fake = self.disc_train(x, binarize(torch.sigmoid(logits.float())))
            loss = losses.gan_generator_loss(seg, d_fake.float(), self.config.gan_lambda)
        trainer.check_loss(loss, where, "generator loss" if self.gan else "loss")
        trainer.update(loss)
        return float(seg.detach())

    def _d_step(self, trainer, x, y, where) -> tuple[float, float]:
        """One discriminator update on real (ground-truth) and fake (binarized prediction)
        masks, with the generator frozen in eval mode. Returns (D loss, seg loss of G)."""
        self.gen.eval()
        self.disc.train()
        with torch.no_grad(), trainer.autocast():
            logits = self.gen(x).float()
        seg = float(self.seg_loss(logits, y))
        fake = binarize(torch.sigmoid(logits))
        with trainer.autocast():  # one forward for both halves (one DDP reduction per step)
            d = self.disc_train(torch.cat([x, x]), torch.cat([y, fake])).float()
        loss = losses.discriminator_adversarial(d[: len(x)], d[len(x) :])
        value = trainer.check_loss(loss, where, "discriminator loss")
        trainer.update(loss, self.d_opt, self.d_scaler, warmup=False)
        return value, seg

    @torch.no_grad()
    def validate(self, trainer) -> dict:
        """Mean loss, IoU and Dice over validation images (prediction: logit > 0; an image
        with empty target and empty prediction scores 1)."""
        self.gen.eval()
        sums = [0.0, 0.0, 0.0, 0.0]
        for x, y in trainer.val_loader:
            x = standardize(x.to(trainer.device))
            y = y.to(trainer.device)
            with trainer.autocast():
                logits = self.gen(x).float()
            pred, truth = logits > 0, y > 0.5
            tp = (pred & truth).sum().item()
            fp = (pred & ~truth).sum().item()
            fn = (~pred & truth).sum().item()
            sums[0] += float(self.seg_loss(logits, y))
            sums[1] += tp / (tp + fp + fn) if tp + fp + fn else 1.0
            sums[2] += 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
            sums[3] += 1
        total = distributed.all_reduce_sum(sums, trainer.device)
        return {k: mean(total[i], total[3]) for i, k in enumerate(self.metric_names)}

    def state_dict(self) -> dict:
        if not self.gan:
            return {}
        return {"d_optimizer": self.d_opt.state_dict(), "d_scaler": self.d_scaler.state_dict()}

    def load_state_dict(self, ckpt: dict) -> None:
        if self.gan:
            self.d_opt.load_state_dict(ckpt["d_optimizer"])
            self.d_scaler.load_state_dict(ckpt["d_scaler"])
