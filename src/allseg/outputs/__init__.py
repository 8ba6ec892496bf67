"""Results and the files they are written to (DESIGN.md, "Output contract")."""

from allseg.outputs.geojson import to_geojson
from allseg.outputs.overlay import draw_overlay
from allseg.outputs.schema import CellResult, Failure, ImageResult, verdict_for
from allseg.outputs.writers import (
    RunWriter,
    output_paths,
    outputs_complete,
    write_image_outputs,
)

__all__ = ["CellResult", "Failure", "ImageResult", "RunWriter", "draw_overlay", "output_paths",
           "outputs_complete", "to_geojson", "verdict_for", "write_image_outputs"]
