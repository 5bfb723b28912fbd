"""TrainConfig: every setting of a segmentation run, saved as the run folder's config.json and
inside each checkpoint, so a run can be resumed and its model rebuilt for prediction."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

MODELS = ("unet", "fpn_resnet18", "fpn_resnet34", "fpn_resnet50", "unet_gan")
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("bce", "focal", "dice", "bce_dice")
GAN_MODES = ("none", "batch", "epoch")


@dataclass
class TrainConfig:
    """Settings of `train_segmentation`. Defaults follow the original work: SGD with momentum
    0.9, lr 0.01 halved every 10 epochs, BCE loss."""

    model: str = "unet"
    in_channels: int | None = None  # None: taken from the first training image
    depth: int = 4  # U-Net poolings (unet, unet_gan)
    width: int = 64  # U-Net first-level channels (unet, unet_gan)
    d_width: int = 32  # discriminator width (unet_gan)
    encoder_weights: str | None = None  # local torchvision-format ResNet state_dict (fpn_*)
    epochs: int = 50
    batch_size: int = 8
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    step_size: int = 10  # StepLR: multiply lr by gamma every step_size epochs
    gamma: float = 0.5
    loss: str = "bce"
    size: int = 256  # training crop side (after Resize, when resize is on)
    resize: bool = True  # scale the shorter side to `size` before cropping
    hflip: bool = True
    vflip: bool = True
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    amp: bool = True  # mixed precision; only ever used on CUDA
    num_workers: int = 0
    val_fraction: float = 0.2  # used by the command line to split the data
    gan_mode: str = "none"  # "batch": D step then G step each batch; "epoch": D/G epochs
    gan_lambda: float = 0.1
    d_lr: float = 1e-4  # discriminator's Adam learning rate
    init_checkpoint: str | None = None  # U-Net weights to start the generator from
    progress: bool = True  # tqdm bar (also off when stderr is not a terminal)
    deterministic: bool = False  # deterministic kernels (cuDNN), slower on CUDA
    extra: dict = field(default_factory=dict)  # free-form notes (layout, data folder, ...)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        choices = {"model": MODELS, "optimizer": OPTIMIZERS, "loss": LOSSES, "gan_mode": GAN_MODES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for name in ("epochs", "batch_size", "size", "step_size", "depth", "width", "d_width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0 or not self.d_lr > 0:
            raise ValueError(f"TrainConfig.lr and d_lr must be > 0, got {self.lr}, {self.d_lr}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.gan_mode != "none" and self.model != "unet_gan":
            raise ValueError(
                f"TrainConfig.gan_mode={self.gan_mode!r} needs model 'unet_gan', got {self.model!r}"
            )
        if self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers must be >= 0, got {self.num_workers}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of to_dict; unknown keys raise (a typo would otherwise pass unnoticed)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown setting(s) {unknown}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"
