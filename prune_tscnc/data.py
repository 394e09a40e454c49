r"""CIFAR-10 in ImageFolder layout (``<root>/<split>/<class>/*.jpg``), read with PIL and numpy.

The transforms work on tensors and follow the usual CIFAR recipe: :class:`ToTensor`,
:class:`RandomCrop` with 4 pixels of zero padding, :class:`RandomHorizontalFlip` and
:class:`Normalize`. The random transforms take an optional :class:`torch.Generator`, so a run
with a fixed seed repeats the same crops and flips. torchvision is deliberately not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10Folder",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "ToTensor",
    "default_data_root",
    "make_loader",
    "train_transform",
]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# Per-channel statistics of the full CIFAR-10 training set (50,000 images).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def default_data_root() -> Path:
    """Return the repository's ``data/images/cifar10`` folder, whatever the working directory."""
    return Path(__file__).resolve().parents[1] / "data" / "images" / "cifar10"


class ToTensor:
    """Convert an image array ``[H, W, 3]`` of ``uint8`` to a float tensor ``[3, H, W]`` in [0, 1]."""

    def __call__(self, image: np.ndarray) -> Tensor:
        if image.dtype != np.uint8 or image.ndim != 3:
            raise TypeError(
                f"ToTensor expects a uint8 array of shape [H, W, C], got dtype {image.dtype} and "
                f"shape {tuple(image.shape)}"
            )
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    r"""Normalise a tensor ``[3, H, W]`` (or ``[N, 3, H, W]``) per channel.

    .. math::
        x' = (x - \mu_c) / \sigma_c

    Args:
        mean (sequence of float): per-channel mean :math:`\mu` (default: CIFAR-10 mean)
        std (sequence of float): per-channel standard deviation :math:`\sigma`
            (default: CIFAR-10 std)
    """

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD):
        if len(mean) != len(std):
            raise ValueError(f"mean and std need the same length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"every std value must be positive, got {tuple(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: Tensor) -> Tensor:
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class RandomCrop:
    """Zero-pad a tensor ``[C, H, W]`` by ``padding`` pixels on each side, then crop ``size`` at random.

    Args:
        size (int): side of the square output (default: :obj:`32`)
        padding (int): zero padding on each border before cropping (default: :obj:`4`)
        generator (torch.Generator, optional): source of randomness (default: :obj:`None`, the
            global torch generator)
    """

    def __init__(self, size: int = 32, padding: int = 4, generator: torch.Generator | None = None):
        if size <= 0 or padding < 0:
            raise ValueError(f"RandomCrop needs size > 0 and padding >= 0, got size={size}, padding={padding}")
        self.size = size
        self.padding = padding
        self.generator = generator

    def __call__(self, x: Tensor) -> Tensor:
        padded = torch.nn.functional.pad(x, [self.padding] * 4)
        max_top = padded.shape[-2] - self.size
        max_left = padded.shape[-1] - self.size
        if max_top < 0 or max_left < 0:
            raise ValueError(f"crop size {self.size} is larger than the padded image {tuple(padded.shape[-2:])}")

        top = int(torch.randint(0, max_top + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, max_left + 1, (1,), generator=self.generator))
        return padded[..., top:top + self.size, left:left + self.size]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Flip a tensor ``[C, H, W]`` left to right with probability ``p``.

    Args:
        p (float): flip probability (default: :obj:`0.5`)
        generator (torch.Generator, optional): source of randomness (default: :obj:`None`)
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, x: Tensor) -> Tensor:
        if float(torch.rand((), generator=self.generator)) < self.p:
            return x.flip(-1)
        return x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply transforms one after the other."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class CIFAR10Folder(Dataset):
    r"""CIFAR-10 images stored as ``<root>/<split>/<class>/*.jpg`` (ImageFolder layout).

    All images of the split are decoded once into a ``uint8`` array ``[num_images, 32, 32, 3]``,
    which is 12 MB for 4,000 images, so epochs cost no JPEG decoding. Labels follow the sorted
    class folder names, which for CIFAR-10 equals the standard order in :data:`CIFAR10_CLASSES`.

    Args:
        root (str or Path, optional): folder holding ``train/`` and ``test/`` (default:
            :obj:`None`, the repository's ``data/images/cifar10``)
        split (str): ``"train"`` or ``"test"`` (default: :obj:`"train"`)
        transform (callable, optional): applied to the ``uint8`` array ``[32, 32, 3]`` of each
            image (default: :obj:`None`, which applies :class:`ToTensor` only)
        max_per_class (int, optional): keep the first ``max_per_class`` files of each class in
            sorted order, a deterministic subset (default: :obj:`None`, all files)
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transform: Callable | None = None,
        max_per_class: int | None = None,
    ):
        root = Path(root) if root is not None else default_data_root()
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if max_per_class is not None and max_per_class <= 0:
            raise ValueError(f"max_per_class must be a positive integer or None, got {max_per_class}")

        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"CIFAR-10 split folder not found: {split_dir}. Pass root= pointing at a folder with "
                f"train/<class>/*.jpg and test/<class>/*.jpg"
            )
        self.root = root
        self.split = split
        self.classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"no class folders found in {split_dir}")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

        self.files: list[Path] = []
        labels: list[int] = []
        for name in self.classes:
            files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
            if max_per_class is not None:
                files = files[:max_per_class]
            self.files.extend(files)
            labels.extend([self.class_to_idx[name]] * len(files))

        self.images = np.stack([_read_rgb(path) for path in self.files])
        self.targets = torch.tensor(labels, dtype=torch.long)
        self.transform = transform if transform is not None else ToTensor()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.images[index]), int(self.targets[index])

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Return all images as ``[N, 3, H, W]`` floats in [0, 1] (no augmentation) and labels ``[N]``."""
        images = torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div_(255.0)
        return images, self.targets.clone()

    def __repr__(self) -> str:
        return f"CIFAR10Folder(root={str(self.root)!r}, split={self.split!r}, num_images={len(self)})"


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """Build a :class:`DataLoader` whose shuffling order depends only on ``seed``.

    Under ``torch.distributed``, wrap the dataset in a ``DistributedSampler`` instead and call its
    ``set_epoch`` each epoch.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
    )


def train_transform(seed: int | None = 0) -> Compose:
    """Return the standard CIFAR training augmentation: crop with 4-pixel padding, then flip.

    With an integer ``seed`` the crops and flips come from their own generator. Pass ``None``
    when the DataLoader has worker processes: each worker would receive a copy of one generator
    and repeat the same crops, whereas the global generator is reseeded per worker by PyTorch.
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return Compose([
        ToTensor(),
        RandomCrop(32, padding=4, generator=generator),
        RandomHorizontalFlip(0.5, generator=generator),
    ])
