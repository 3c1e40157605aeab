"""Cross-validation of MISO against RF-11 and a majority baseline: metrics, regions, tables, report."""

from miso_mapper.evaluate.metrics import binary_metrics, multiclass_metrics, reliability
from miso_mapper.evaluate.regions import assign_regions
from miso_mapper.evaluate.run import Evaluation, run_evaluation

__all__ = ["Evaluation", "assign_regions", "binary_metrics", "multiclass_metrics", "reliability", "run_evaluation"]
