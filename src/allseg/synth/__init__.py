"""Procedural May-Grünwald-Giemsa blood smears with exact ground truth.

``generate_field`` draws a whole smear field, ``generate_crop`` one centred
leukocyte, and ``write_dataset`` writes either to disk in the ALL-IDB1, ALL-IDB2 or
mask-folder layout. Same seed, same bytes.
"""

from allseg.synth.cells import LEUKOCYTE_TYPES
from allseg.synth.layouts import LAYOUTS, default_um_per_px, write_dataset
from allseg.synth.smear import SynthField, generate_crop, generate_field

__all__ = ["LAYOUTS", "LEUKOCYTE_TYPES", "SynthField", "default_um_per_px", "generate_crop",
           "generate_field", "write_dataset"]
