"""How the MISO map predictor tiles, batches and blends (:class:`PredictorConfig`), without importing torch.

The workflow's ``model.predictor`` section is a :class:`PredictorConfig`, so ``validate`` and ``plan`` check and
count the predictor's windows without loading the network's machinery; :mod:`miso_mapper.inference.miso`
runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from miso_mapper.bands import WINDOW_PX
from miso_mapper.errors import MisoError
from miso_mapper.inference.windows import BlendKind, WindowLayout, required_halo

if TYPE_CHECKING:
    from miso_mapper.model.config import MisoNetConfig

#: Side of the finest encoder feature cell in network input pixels (the Swin patch embedding's 4).
FINEST_CELL_INPUT_PX = 4
#: Automatic query spacing: at most this many of the network's finest feature cells and at most
#: :data:`MAX_AUTO_QUERY_SPACING` px (rounded down to a divisor of the stride; :func:`auto_query_spacing`).
QUERY_SPACING_PER_CELL = 1.3
#: Largest automatic query spacing, px: on both trained demo networks (3.9 and 15.6 px cells) 10 px lost about
#: 1 % of soil-order agreement with the reference map and 5 px at most 0.4 % (benchmarks/README.md, "Tuning").
MAX_AUTO_QUERY_SPACING = 5
#: Multi-rate: the coarser stages (all but the finest, which runs at every queried point) are evaluated at most
#: every this fraction of their own feature cell (rounded down to a divisor of the stride;
#: :func:`auto_stage_spacings`).
STAGE_SPACING_PER_CELL = 0.8
#: Distance between window centres of the reference's demo loop: a fifth of the window (its interval 5).
REFERENCE_STRIDE = WINDOW_PX // 5


class PredictorConfig(BaseModel):
    """How :class:`~miso_mapper.inference.miso.MisoPredictor` tiles, batches and blends. The defaults are the
    fast (ensemble) setting.

    Lengths are in pixels of the 10 m grid. Cost: about ``(2 support / (stride * query_spacing))**2``
    queries per output pixel (the reference setting: ``(window / stride)**2 = 25`` plus its halo windows), the
    coarse stages evaluated on fewer points with ``multi_rate``; counted exactly by
    :func:`~miso_mapper.inference.chunk_cost.chunk_load`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(WINDOW_PX, gt=0, description="window side = the model's context (its crop_size), px")
    query_all_pixels: bool = Field(
        False, description="reference mode: windows at every `stride` px of the halo grid, each queried on "
                           "every pixel (MISO/demo.py)")
    stride: int = Field(REFERENCE_STRIDE, gt=0, description="distance between window centres, px (the reference's "
                                                           "250 // 5 = 50); keep the chunk size a multiple of it")
    support: int = Field(100, gt=0, description="ensemble mode: a window answers for points up to this many px "
                                               "from its centre (per axis); more = closer to the reference, "
                                               "slower")
    ramp: int = Field(50, ge=0, description="ensemble mode: px over which a window's weight falls to 0 at the "
                                           "edge of its support (raised cosine); 0 = hard cut")
    query_spacing: int | None = Field(
        None, ge=1, description="ensemble mode: px between queried points, bilinear in between; None = from the "
                                "network (see auto_query_spacing); must divide `stride`")
    multi_rate: bool = Field(
        True, description="ensemble mode: evaluate each encoder stage only on its own lattice (`stage_spacings`), "
                          "interpolate it to the queried points, then sum, normalise and run the mappers and head "
                          "per point; false = every stage at every queried point (exact per point)")
    stage_spacings: tuple[int, int, int, int] | None = Field(
        None, description="multi-rate: px between the points at which each of the four stages is evaluated "
                          "(finest first); None = from each stage's feature cell (see auto_stage_spacings); "
                          "each must divide `stride`; a spacing not above `query_spacing` means every queried "
                          "point")
    blend: BlendKind = Field("gaussian", description="mask over each window: gaussian (the reference's), hann "
                                                    "or cosine")
    sigma_fraction: float = Field(0.25, gt=0, description="gaussian mask sigma as a fraction of the window")
    batch_size: int | None = Field(None, ge=1, description="windows per batch; None = 4 on CPU, from free "
                                                          "memory on CUDA")
    max_batch_size: int = Field(64, ge=1, description="cap of the automatic batch size")
    query_batch: int | None = Field(None, ge=1, description="points per query call over the whole batch "
                                                           "(bounds B x N x 4 x hidden memory); None = auto")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N; cpu "
                        "is also the explicit opt-in that lets the reference network map on a cluster without GPUs")
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU, which runs float32)")
    channels_last: bool = Field(True, description="channels-last windows and encoders on CUDA")
    gpu_memory_fraction: float = Field(0.8, gt=0, le=1, description="share of free GPU memory to plan for")
    attention: Literal["math", "sdpa"] = Field(
        "math", description="Swin v2 window attention of the Sentinel-2 encoder: math = torchvision's attention as "
                            "in the reference; sdpa = the same function through scaled_dot_product_attention, "
                            "flash/efficient kernels on CUDA")
    compile: bool = Field(False, description="torch.compile the encoders with fixed batch shapes; the first chunk "
                                             "pays the compilation")

    @model_validator(mode="after")
    def _check(self) -> PredictorConfig:
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} is larger than the window {self.window}")
        if not self.query_all_pixels:
            if not self.stride / 2 < self.support <= self.window // 2:
                raise ValueError(f"support {self.support} must be more than half the stride ({self.stride}) so "
                                 f"every point has a window, and at most half the window ({self.window // 2})")
            if self.ramp > self.support:
                raise ValueError(f"ramp {self.ramp} is longer than the support {self.support}")
            if self.query_spacing is not None and self.stride % self.query_spacing:
                raise ValueError(f"query_spacing {self.query_spacing} must divide the stride {self.stride} "
                                 "(so chunks that are a multiple of the stride share their edge points)")
            bad = [s for s in self.stage_spacings or () if s < 1 or self.stride % s]
            if bad:
                raise ValueError(f"stage_spacings {list(self.stage_spacings or ())} must be positive divisors of "
                                 f"the stride {self.stride} (so neighbouring chunks evaluate the same points)")
        return self

    @classmethod
    def reference(cls, **overrides: Any) -> PredictorConfig:
        """The reference demo's setting: stride 50, every pixel of every window, Gaussian mask sigma 0.25."""
        return cls(**({"query_all_pixels": True, "stride": REFERENCE_STRIDE, "blend": "gaussian"} | overrides))

    def required_halo(self) -> int:
        """Halo (px) a chunk needs: ``window / 2`` for the reference setting (its pixels near the chunk edge
        then see fewer windows), more for the ensemble (:func:`~miso_mapper.inference.windows.required_halo`)."""
        if self.query_all_pixels:
            return self.window - self.window // 2
        return required_halo(self.window, self.stride, self.support)

    def check_grid(self, chunk_size: int, halo: int) -> None:
        """Raise ``ValueError`` if chunks of ``chunk_size`` px with ``halo`` px cannot be mapped seamlessly."""
        if halo < self.required_halo():
            raise ValueError(f"grid.halo is {halo} px but the predictor needs at least {self.required_halo()} px "
                             f"(window {self.window}, stride {self.stride}"
                             + ("" if self.query_all_pixels else f", support {self.support}") + ")")
        if not self.query_all_pixels and chunk_size % self.stride:
            raise ValueError(f"grid.chunk_size {chunk_size} is not a multiple of the predictor stride "
                             f"{self.stride}: neighbouring chunks would use different windows (seams)")

    def spacings(self, networks: Sequence[MisoNetConfig]) -> tuple[int, tuple[int, ...]]:
        """(query spacing, per-stage spacings) in px for ``networks`` (the finest any of them needs).

        The reference setting queries every pixel at every stage: ``(1, (1, 1, 1, 1))``. Without
        ``multi_rate`` every stage runs at the query spacing.
        """
        if self.query_all_pixels:
            return 1, (1,) * len(networks[0].query_hidden)
        q = self.query_spacing or min(auto_query_spacing(n, self.stride) for n in networks)
        if not self.multi_rate:
            return q, (q,) * len(networks[0].query_hidden)
        if self.stage_spacings is not None:
            return q, tuple(max(q, s) for s in self.stage_spacings)
        per_net = [auto_stage_spacings(n, self.stride) for n in networks]
        return q, tuple(max(q, min(s)) for s in zip(*per_net, strict=True))

    def layout(self, shape: tuple[int, int], interior: tuple[slice, slice], query_spacing: int = 1) -> WindowLayout:
        """The windows for a halo grid of ``shape`` (rows, cols) with ``interior``; ``query_spacing`` is the
        resolved spacing (``self.query_spacing`` wins when set; the reference setting always uses 1)."""
        if self.query_all_pixels:
            return WindowLayout.reference(shape, interior, self.window, self.stride)
        return WindowLayout.ensemble(shape, interior, self.window, self.stride, self.support, self.ramp,
                                     self.query_spacing or query_spacing)


def checked_predictor_config(settings: PredictorConfig | Mapping[str, Any], chunk_size: int,
                             halo: int) -> PredictorConfig:
    """``settings`` as a valid :class:`PredictorConfig` that fits a grid's chunk size and halo
    (:meth:`PredictorConfig.check_grid`).

    A loaded workflow has already passed these checks; this repeats them for settings that did not come through
    validation (a dict, ``model_copy(update=...)``). Raises :class:`MisoError` (``model.predictor: ...``) naming
    the bad field or the misfit.
    """
    try:
        checked = PredictorConfig.model_validate(settings)
        checked.check_grid(chunk_size, halo)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MisoError(f"model.predictor{'.' + where if where else ''}: {first['msg']}") from None
    except ValueError as exc:  # check_grid
        raise MisoError(f"model.predictor: {exc}") from None
    return checked


def feature_cells(cfg: MisoNetConfig) -> tuple[float, ...]:
    """Side of each encoder stage's feature cell in native (10 m) px, finest first: ``crop_size / input_size
    * 4 * 2**i`` (3.9, 7.8, 15.6, 31 px for the reference network)."""
    base = cfg.crop_size / cfg.input_size * FINEST_CELL_INPUT_PX
    return tuple(base * 2**i for i in range(len(cfg.query_hidden)))


def _largest_divisor_at_most(stride: int, limit: float) -> int:
    """The largest divisor of ``stride`` that is ``<= limit`` (at least 1)."""
    return max((d for d in range(1, stride + 1) if stride % d == 0 and d <= limit), default=1)


def auto_stage_spacings(cfg: MisoNetConfig, stride: int) -> tuple[int, ...]:
    """Multi-rate spacing of each stage: 1 for the finest stage (so it runs at every queried point; evaluated
    more coarsely it cost the tiny network 2 % of soil-order agreement) and, for the others, the largest
    divisor of ``stride`` at most :data:`STAGE_SPACING_PER_CELL` of the stage's feature cell
    (:func:`feature_cells`): 5, 10 and 25 px for the reference network's 7.8 / 15.6 / 31 px cells
    (:meth:`PredictorConfig.spacings` raises every spacing to at least the query spacing).

    A stage's query varies on the scale of its own cell, and the coarse stages carry the widest MLPs (60 % of a
    reference query's FLOPs), so they can be evaluated on far fewer points.
    """
    cells = feature_cells(cfg)
    return (1, *(_largest_divisor_at_most(stride, cell * STAGE_SPACING_PER_CELL) for cell in cells[1:]))


def auto_query_spacing(cfg: MisoNetConfig, stride: int) -> int:
    """Query spacing for a network: the largest divisor of ``stride`` at most :data:`QUERY_SPACING_PER_CELL`
    times the network's finest feature cell (``crop_size / input_size * 4`` px: 3.9 px for the reference and
    compact networks, 7.8 small, 15.6 tiny) and at most :data:`MAX_AUTO_QUERY_SPACING` px: 5 px for every
    preset at stride 50.

    Why so coarse: a trained network's output is smooth within a feature cell, and the ensemble averages
    windows whose cells are out of phase. Measured against the full-context reference map on the trained
    compact demo networks: 1, 2 and 5 px agree alike (>= 99 % argmax), 10 px loses about 1 % on soil order;
    the tiny networks lose the same at 10 px although their cells are 4x larger (the demo landscape's own
    detail sets the limit there) (benchmarks/README.md, "Tuning").
    """
    return _largest_divisor_at_most(stride, min(MAX_AUTO_QUERY_SPACING, feature_cells(cfg)[0] * QUERY_SPACING_PER_CELL))
