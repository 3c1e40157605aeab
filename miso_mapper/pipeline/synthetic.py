"""The synthetic stand-in predictor (``model.kind: synthetic``) of tests, pipeline benchmarks and the demo.

**It is not a model**: it maps a fixed random linear function of the smoothed inputs, so the pipeline around it
(reading, halo and interior, scaling, writes, resume) can be exercised in seconds without weights.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter

from miso_mapper.bands import COVARIATES, S2_BANDS, SOIL_ORDERS
from miso_mapper.inference.predictor import interior_coords


class SyntheticPredictor:
    """NOT A MODEL: a deterministic stand-in :class:`~miso_mapper.inference.predictor.Predictor` for tests.

    Probabilities are a fixed (``seed``) random linear map of the 19 normalised inputs (``s2``, ``cov``),
    each smoothed with a Gaussian of ``sigma`` px over the whole halo grid before the interior is cut out:
    so every output pixel depends on its neighbourhood, as MISO's do, and a pipeline that misplaced the
    interior or the halo would show seams at chunk edges. Permafrost: sigmoid; orders: softmax over 7.
    NaN where ``inputs['valid']`` is False. CPU only, about a second per 750 x 750 px chunk.
    """

    def __init__(self, seed: int = 0, sigma: float = 3.0, logit_scale: float = 1.5) -> None:
        rng = np.random.default_rng(seed)
        n_in = len(S2_BANDS) + len(COVARIATES)
        self.sigma = float(sigma)
        self.weights = rng.normal(size=(1 + len(SOIL_ORDERS), n_in)) * logit_scale / np.sqrt(n_in)
        self.bias = rng.normal(size=1 + len(SOIL_ORDERS)) * 0.5

    def predict_chunk(self, inputs: xr.Dataset, interior: tuple[slice, slice]) -> xr.Dataset:
        """See :class:`~miso_mapper.inference.predictor.Predictor`."""
        s2 = inputs["s2"].sel(s2_band=list(S2_BANDS)).transpose("s2_band", "y", "x").values
        cov = inputs["cov"].sel(cov_band=list(COVARIATES)).transpose("cov_band", "y", "x").values
        image = np.nan_to_num(np.concatenate([s2, cov]).astype(np.float32))
        smooth = gaussian_filter(image, sigma=(0, self.sigma, self.sigma), mode="nearest", truncate=3.0)
        rows, cols = interior
        z = np.einsum("ob,byx->oyx", self.weights, smooth[:, rows, cols]) + self.bias[:, None, None]
        pf = 1.0 / (1.0 + np.exp(-z[0]))
        t = z[1:] - z[1:].max(axis=0, keepdims=True)
        tx = np.exp(t)
        tx /= tx.sum(axis=0, keepdims=True)
        valid = np.asarray(inputs["valid"].values, dtype=bool)[rows, cols]
        pf = np.where(valid, pf, np.nan).astype(np.float32)
        tx = np.where(valid[None], tx, np.nan).astype(np.float32)
        return xr.Dataset(
            {"permafrost_probability": (("y", "x"), pf), "taxonomy_probability": (("class", "y", "x"), tx)},
            coords={"class": list(SOIL_ORDERS), **interior_coords(inputs, interior)},
        )

