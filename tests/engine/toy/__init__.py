"""A toy task package, as a new task is written: its config, its Task and its commands, and no
line anywhere else but the registry's (test_registry adds it to engine.tasks.PACKAGES). The
model learns the mean intensity of an image."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fastdet.engine.commands import add_train_parser
from fastdet.engine.config import RunConfig, setting
from fastdet.engine.trainer import Task as BaseTask


@dataclasses.dataclass
class ToyConfig(RunConfig):
    task = "toy"

    model: str = setting("mean", "the toy network", choices=("mean",))
    epochs: int = setting(2, "training epochs")
    batch_size: int = setting(4, "images per step")
    lr: float = setting(0.1, "learning rate")


class Images(torch.utils.data.Dataset):
    """Random 8 x 8 images of known mean, drawn from the split's seed."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 1, 8, 8, generator=g) * torch.rand(n, 1, 1, 1, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "id": str(i)}


class Tensors(torch.utils.data.Dataset):
    def __init__(self, base):
        self.base = base

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x = self.base[i]["image"]
        return x, x.mean().reshape(1)


class Task(BaseTask):
    name = "toy"
    title = "toy regression"
    description = "train the toy mean-intensity model"
    config_class = ToyConfig
    checkpoint_format = "fastdet.toy.v1"
    metric_names = ("val_loss",)
    best_metric = "val_loss"
    plot = (("Loss", (("loss", "train"),)), ("Validation", (("val_loss", "-MSE"),)))

    def build_model(self, config, pretrained):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 1))

    def dataset(self, data, augment):
        return Tensors(data)

    def train_step(self, trainer, batch, where):
        x, y = (t.to(trainer.device) for t in batch)
        loss = nn.functional.mse_loss(trainer.train_model(x), y)
        trainer.check_loss(loss, where)
        trainer.update(loss)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validate(self, trainer):
        losses = [float(nn.functional.mse_loss(trainer.model(x), y)) for x, y in trainer.val_loader]
        return {"val_loss": -sum(losses) / len(losses)}  # higher is better


def open_sets(layout, root, split, config):
    return Images(16 if split == "train" else 8, {"train": 0, "val": 1}.get(split, 2))


def add_commands(train, predict, evaluate, tune) -> None:
    add_train_parser(train, Task, ("noise",), open_sets)
