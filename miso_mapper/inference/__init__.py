"""Inference: turning a chunk's model inputs into probability layers (MISO and the RF-11 baseline)."""

from miso_mapper.inference.predictor import Predictor, interior_of

__all__ = ["Predictor", "interior_of"]
