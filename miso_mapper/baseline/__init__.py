"""RF-11, the Random Forest baseline of the paper, and a majority-class baseline."""

from miso_mapper.baseline.rf import (
    FEATURE_NAMES,
    RFModel,
    features_from_inputs,
    features_from_raw,
    features_from_samples,
)
from miso_mapper.baseline.rf_file import convert_pickled_rf, load_rf, save_rf

__all__ = ["FEATURE_NAMES", "RFModel", "features_from_inputs", "features_from_raw",
           "features_from_samples", "convert_pickled_rf", "load_rf", "save_rf"]
