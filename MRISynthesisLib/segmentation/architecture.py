"""The lesion segmenter's network, described by the model card's ``architecture`` and built from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError

KIND = "lesion-segmenter"
STEM = "unet"  # weight file stem of the network


@dataclass(frozen=True)
class SegmenterArchitecture:
    """A MONAI ``UNet`` mapping ``inputs`` (channels, in order) to one lesion logit per voxel.

    Args:
        inputs: input names in channel order, e.g. ``("t1w", "flair")``; an input left out at inference is a
            channel of zeros (the network was trained with such dropped channels).
        channels: feature channels per level, e.g. ``(16, 32, 64, 128)``.
        strides: one stride per down-sampling (``len(channels) - 1`` of them).
        num_res_units: residual units per level.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        roi: sliding-window patch edge (voxels) at inference, a multiple of the product of ``strides``.
        percentiles: intensity normalisation of each input inside the brain (``preprocess.normalise``).
    """

    inputs: tuple[str, ...] = ("t1w", "flair")
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    norm: str = "instance"
    roi: int = 96
    percentiles: tuple[float, float] = (1.0, 90.0)

    def __post_init__(self):
        if not self.inputs or len(set(self.inputs)) != len(self.inputs):
            raise InputError(f"inputs must be distinct names, got {self.inputs!r}", "architecture.inputs")
        if len(self.channels) < 2 or any(int(c) < 1 for c in self.channels):
            raise InputError(f"channels must be >= 2 positive integers, got {self.channels!r}", "architecture.channels")
        if len(self.strides) != len(self.channels) - 1 or any(int(s) < 1 for s in self.strides):
            raise InputError("strides must hold one positive integer per down-sampling (len(channels) - 1)",
                             "architecture.strides")
        if self.norm not in ("instance", "batch", "none"):
            raise InputError(f"norm must be instance, batch or none, got {self.norm!r}", "architecture.norm")
        if self.roi < self.multiple or self.roi % self.multiple:
            raise InputError(f"roi must be a multiple of {self.multiple}, got {self.roi}", "architecture.roi")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise InputError(f"percentiles must be 0 <= low < high <= 100, got {self.percentiles!r}",
                             "architecture.percentiles")

    @property
    def multiple(self) -> int:
        """Grid sizes the network accepts are multiples of this."""
        product = 1
        for stride in self.strides:
            product *= int(stride)
        return product

    @classmethod
    def from_dict(cls, data: dict) -> "SegmenterArchitecture":
        """Parse a card's ``architecture``; unknown keys are refused (a typo would silently change the net)."""
        if data.get("kind") != KIND:
            raise InputError(f"kind must be {KIND!r}, got {data.get('kind')!r}", "architecture.kind")
        known = set(cls.__dataclass_fields__) | {"kind", "network", "parameters"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown key(s) {', '.join(unknown)}", "architecture")
        values = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        for key in ("inputs", "channels", "strides", "percentiles"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict:
        data = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        return {"kind": KIND, "network": "monai.networks.nets.UNet", **data}

    def build(self):
        """The untrained network: ``(B, len(inputs), D, H, W)`` -> lesion logits ``(B, 1, D, H, W)``."""
        from monai.networks.nets import UNet

        return UNet(spatial_dims=3, in_channels=len(self.inputs), out_channels=1, channels=self.channels,
                    strides=self.strides, num_res_units=self.num_res_units,
                    norm=None if self.norm == "none" else self.norm)
