"""From the segmenter's maps to cell instances, their morphometry and crops."""

from allseg.postprocess.crops import cell_crops
from allseg.postprocess.features import cell_features, equivalent_diameter
from allseg.postprocess.instances import instances_from_maps

__all__ = ["cell_crops", "cell_features", "equivalent_diameter", "instances_from_maps"]
