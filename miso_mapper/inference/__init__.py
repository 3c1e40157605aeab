"""Mapping with a trained model: the :class:`~miso_mapper.inference.predictor.Predictor` interface and the MISO
predictor's settings (:class:`~miso_mapper.inference.settings.PredictorConfig`, torch-free)."""

from miso_mapper.inference.predictor import Predictor, empty_prediction
from miso_mapper.inference.settings import PredictorConfig

__all__ = ["Predictor", "PredictorConfig", "empty_prediction"]
