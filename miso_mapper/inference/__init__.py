"""Mapping with a trained model: the :class:`~miso_mapper.inference.predictor.Predictor` interface."""

from miso_mapper.inference.predictor import Predictor, empty_prediction

__all__ = ["Predictor", "empty_prediction"]
