"""Architecture configuration of the MISO network (:class:`MisoNetConfig`) and its named presets.

The ``reference`` preset reproduces the network the reference code (``knowledge-computing/Peatland-permafrost``,
``MISO/``, config ``visual_geo__sat_cov__c19``) builds, parameter for parameter, so that a checkpoint trained by
it loads with ``strict=True``. ``small`` and ``tiny`` keep exactly the same structure (two four-stage Swins,
four implicit-query stages, grid-cell location encoder, mappers and heads) at sizes a CPU runs in seconds;
they are for demos and tests, not for maps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from miso_mapper.bands import COVARIATES, S2_BANDS, SOIL_ORDERS, WINDOW_PX

Task = Literal["permafrost", "taxonomy"]
PresetName = Literal["reference", "compact", "small", "tiny"]

#: Every preset name, largest first (what `model.size` / `train.size` accept).
PRESET_NAMES: tuple[PresetName, ...] = ("reference", "compact", "small", "tiny")

#: Output width of each task's heads: one logit (permafrost within 1 m) or one logit per soil order.
TASK_OUT_DIM: dict[str, int] = {"permafrost": 1, "taxonomy": len(SOIL_ORDERS)}

#: Class names of each task's head outputs, in output-channel order.
TASK_CLASS_NAMES: dict[str, tuple[str, ...]] = {"permafrost": ("permafrost",), "taxonomy": SOIL_ORDERS}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SwinConfig(_Frozen):
    """Sizes of one four-stage Swin encoder (patch size 4, MLP ratio 4, qkv bias, as the reference)."""

    embed_dim: int = Field(128, gt=0, description="channels of stage 1; stage i has embed_dim * 2**i")
    depths: tuple[int, int, int, int] = (2, 2, 18, 2)
    num_heads: tuple[int, int, int, int] = (4, 8, 16, 32)
    window_size: int = Field(8, gt=0, description="attention window side, in tokens")
    drop_path: float = Field(0.1, ge=0.0, lt=1.0, description="stochastic-depth rate (training only)")

    @property
    def out_dim(self) -> int:
        """Channels of the last stage (= the embedding width of the implicit query)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channels of the four stage feature maps."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


class LocationConfig(_Frozen):
    """Space2Vec grid-cell location encoder followed by its fully connected stack."""

    num_frequencies: int = Field(64, gt=1)
    min_radius: float = Field(0.0005, gt=0, description="smallest wavelength scale, in normalised units")
    max_radius: float = Field(2.0, gt=0, description="largest wavelength scale, in normalised units")
    num_residual_layers: int = Field(3, ge=0, description="residual FC layers between the first and last")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class MisoNetConfig(_Frozen):
    """Every size of the MISO network. ``MisoNetConfig()`` is the reference permafrost network.

    Use :meth:`preset` for the named presets. ``out_dim`` follows from ``task`` when left out.
    """

    task: Task = "permafrost"
    out_dim: int = Field(0, ge=0, description="head width; 0 = the task's (1 or 7)")
    sat_bands: int = Field(len(S2_BANDS), gt=0, description="Sentinel-2 channels, first in the input stack")
    cov_bands: int = Field(len(COVARIATES), gt=0, description="covariate channels, after the S2 bands")
    crop_size: int = Field(WINDOW_PX, gt=0, description="window side in 10 m pixels that the data pipeline cuts")
    input_size: int = Field(256, gt=0, description="side the window is resized to before the encoders")
    sat_encoder: SwinConfig = SwinConfig(drop_path=0.5)
    cov_encoder: SwinConfig = SwinConfig(drop_path=0.1)
    query_hidden: tuple[tuple[int, int], ...] = Field(
        ((256, 512), (256, 512), (512, 1024), (1024, 1024)),
        description="hidden widths of the per-stage query MLPs (input: stage channels + 2, output: embedding)",
    )
    rel_coord_order: Literal["reference", "xy"] = Field(
        "reference",
        description="'reference' reproduces the reference's pairing of (x, y) queries with (row, col) cell "
        "centres; 'xy' pairs x with column centres (geometrically consistent, needs retraining)",
    )
    location: LocationConfig = LocationConfig()
    input_standardization: bool = Field(
        False,
        description="standardise each of the 19 input channels with buffers `input_mean`/`input_std` fitted on "
        "the training chips before the encoders. Off in the reference (whose normalisation leaves some "
        "covariates with a spread of ~0.003, which a small network trained from scratch barely sees); "
        "a reference checkpoint has no such buffers, so it loads only with this off",
    )
    mapper_hidden: int = Field(1024, gt=0, description="hidden width of the sat/cov/visual/geo mappers")
    head_hidden: tuple[int, int] = (1024, 512)

    @model_validator(mode="after")
    def _check(self) -> MisoNetConfig:
        if self.out_dim == 0:
            object.__setattr__(self, "out_dim", TASK_OUT_DIM[self.task])
        elif self.out_dim != TASK_OUT_DIM[self.task]:
            raise ValueError(f"out_dim {self.out_dim} does not fit task {self.task!r} "
                             f"(expects {TASK_OUT_DIM[self.task]})")
        if self.sat_encoder.out_dim != self.cov_encoder.out_dim:
            raise ValueError("both encoders must end with the same width (their embeddings are summed)")
        if len(self.query_hidden) != len(self.sat_encoder.depths):
            raise ValueError("query_hidden needs one (hidden1, hidden2) pair per encoder stage")
        for enc in (self.sat_encoder, self.cov_encoder):
            if self.input_size % (4 * 2 ** (len(enc.depths) - 1)) != 0:
                raise ValueError(f"input_size {self.input_size} must be divisible by "
                                 f"{4 * 2 ** (len(enc.depths) - 1)} (patch 4 and three 2x merges)")
            res = self.input_size // 4
            for _ in enc.depths:
                if res > enc.window_size and res % enc.window_size != 0:
                    raise ValueError(f"stage resolution {res} is not a multiple of window {enc.window_size}")
                res //= 2
        return self

    @property
    def emb_dim(self) -> int:
        """Width of every per-point embedding (sat, cov, visual, location): 1024 for the reference."""
        return self.sat_encoder.out_dim

    @property
    def in_bands(self) -> int:
        """Channels of the stacked input window (9 S2 bands + 10 covariates = 19, "c19")."""
        return self.sat_bands + self.cov_bands

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the head's output channels."""
        return TASK_CLASS_NAMES[self.task]

    @classmethod
    def preset(cls, name: PresetName = "reference", task: Task = "permafrost") -> MisoNetConfig:
        """The named preset for ``task``: ``reference`` (about 212 M parameters), ``compact``, ``small`` or
        ``tiny``."""
        if name == "reference":
            return cls(task=task)
        if name == "small":
            e = 256
            return cls(
                task=task, input_size=128,
                sat_encoder=SwinConfig(embed_dim=32, depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8),
                                       window_size=4, drop_path=0.5),
                cov_encoder=SwinConfig(embed_dim=32, depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8),
                                       window_size=4, drop_path=0.1),
                query_hidden=_reference_query_hidden(e), mapper_hidden=e, head_hidden=(e, e // 2),
            )
        if name == "tiny":
            e = 64
            return cls(
                task=task, input_size=64,
                sat_encoder=SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2),
                                       window_size=2, drop_path=0.5),
                cov_encoder=SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2),
                                       window_size=2, drop_path=0.1),
                query_hidden=_reference_query_hidden(e), mapper_hidden=e, head_hidden=(e, e // 2),
                location=LocationConfig(num_frequencies=16),
            )
        if name == "compact":
            return _compact(task)
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")


def _compact(task: Task, embed_dim: int = 16, depths: tuple[int, int, int, int] = (1, 1, 1, 1),
             window_size: int = 4, emb: int = 64) -> MisoNetConfig:
    """The ``compact`` preset: the reference's geometry with narrow, shallow encoders.

    Like the reference, the 250 px window is resized to 256 px and cut into 4 px patches, so stage 1 has 64 x 64
    tokens and its feature cells are 3.9 native px (stages: 64, 32, 16, 8 tokens, all multiples of the
    window). Widths are the tiny preset's; the arguments exist for ``benchmarks/presets.py``'s candidates.
    """
    def swin(drop_path: float) -> SwinConfig:
        return SwinConfig(embed_dim=embed_dim, depths=depths, num_heads=(1, 1, 2, 2), window_size=window_size,
                          drop_path=drop_path)

    return MisoNetConfig(
        task=task, input_size=256, sat_encoder=swin(0.5), cov_encoder=swin(0.1),
        query_hidden=_reference_query_hidden(emb), mapper_hidden=emb, head_hidden=(emb, emb // 2),
        location=LocationConfig(num_frequencies=16),
    )


def _reference_query_hidden(emb_dim: int) -> tuple[tuple[int, int], ...]:
    """The reference's rule for the query MLP hidden widths given the embedding width ('sum' pooling)."""
    e = emb_dim
    return ((e // 4, e // 2), (e // 4, e // 2), (e // 2, e), (e, e))
