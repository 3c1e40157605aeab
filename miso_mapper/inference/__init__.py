"""Mapping with a trained model: the :class:`~miso_mapper.inference.predictor.Predictor` interface and the MISO
predictor's settings (:class:`~miso_mapper.inference.settings.PredictorConfig`, torch-free).

Names are imported on first use (PEP 562), so that ``miso_mapper.config``, which needs only the settings,
loads neither xarray nor torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miso_mapper.inference.predictor import Predictor, empty_prediction
    from miso_mapper.inference.settings import PredictorConfig

#: Public name -> the submodule that defines it.
_HOME = {"Predictor": "predictor", "empty_prediction": "predictor", "PredictorConfig": "settings"}

__all__ = ["Predictor", "PredictorConfig", "empty_prediction"]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first access (PEP 562)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
