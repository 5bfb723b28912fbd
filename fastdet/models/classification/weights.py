"""Loading torchvision-format classification weights from a local file into fastdet's
classifiers: a file or a state_dict in, with grey (or any channel count) stems made from the
RGB filters and a fresh head when the class count differs. Nothing is downloaded."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

# torchvision's DenseNet files from its model zoo name the dense layers' modules "norm.1",
# "conv.2", ...; its model (and fastdet's) calls them "norm1", "conv2".
_DENSE_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def read_state_dict(source) -> dict:
    """The tensors of `source`: a state_dict (mapping), or a local file of one written with
    torch.save (a bare state_dict, or a dict holding it under "state_dict" or, for a fastdet
    engine checkpoint, "model"). Read with weights_only=True: a weight file cannot run code."""
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {path} does not exist (fastdet never downloads weights)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), Mapping):
            state = dict(state[key])
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"weights: not a state_dict of tensors (e.g. {bad[0]!r})")
    return {_DENSE_LEGACY.sub(r"\1\2", k): v for k, v in state.items()}


def load_classifier_weights(model: nn.Module, source, stem: str, head: str) -> nn.Module:
    """Loads torchvision-format weights (see read_state_dict) into `model`, in place.

    stem: the first convolution's name ("conv1", "features.conv0"); when the file's filters
    have 3 input channels and the model another number c, each of the model's channels gets the
    RGB filters' sum / c, so an image repeated over the c channels gives the pretrained response
    to it as a grey RGB image (c = 1: the plain sum). head: the last linear layer ("fc",
    "classifier"); when its shape differs from the model's (another class count), the model
    keeps its freshly initialized head. Any other missing, unexpected or misshapen key is a
    ValueError naming the source."""
    name = source if not isinstance(source, Mapping) else "state_dict"
    state = read_state_dict(source)
    own = model.state_dict()
    key = f"{stem}.weight"
    w = state.get(key)
    if w is not None and key in own and w.shape[1] != own[key].shape[1]:
        if w.shape[1] != 3:
            raise ValueError(
                f"{name}: {key} has {w.shape[1]} input channels; only 3-channel (RGB) filters "
                f"can be adapted to the model's {own[key].shape[1]}"
            )
        c = own[key].shape[1]
        state[key] = (w.sum(1, keepdim=True) / c).repeat(1, c, 1, 1)
    heads = [k for k in (f"{head}.weight", f"{head}.bias") if k in state]
    if any(k in own and state[k].shape != own[k].shape for k in heads):
        for k in heads:
            state[k] = own[k]  # another class count: keep the fresh head
    for k in set(own) - set(state):  # files from before torch 0.4.1 lack these counters
        if k.endswith(".num_batches_tracked"):
            state[k] = own[k]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected or wrong:
        raise ValueError(
            f"{name}: not a state_dict for {type(model).__name__}: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, other shapes {wrong[:5]}"
        )
    model.load_state_dict(state)
    return model
