"""RF-11, the Random Forest baseline of the paper, and a majority-class baseline."""

from miso_mapper.baseline.rf import (
    LEGACY_FEATURES,
    NOTEBOOK_FEATURES,
    RAW_FEATURES,
    SCRIPT_FEATURES,
    SETTINGS,
    RFModel,
    RFSetting,
    features_from_inputs,
    features_from_raw,
    features_from_samples,
    lonlat,
    rf_setting,
)
from miso_mapper.baseline.rf_file import convert_pickled_rf, load_rf, save_rf

__all__ = ["LEGACY_FEATURES", "NOTEBOOK_FEATURES", "RAW_FEATURES", "SCRIPT_FEATURES", "SETTINGS", "RFModel",
           "RFSetting", "features_from_inputs", "features_from_raw", "features_from_samples", "lonlat",
           "rf_setting", "convert_pickled_rf", "load_rf", "save_rf"]
