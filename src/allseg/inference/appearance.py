"""The photo as the networks see it: one preparation, shared by prediction and training.

In colour (``monochrome.in_colour``), an eyepiece's black ring painted the slide's colour
(``field_of_view.blank_outside_field``), a dark photo brightened
(``illumination.exposed``) and a faint one's levels spread (``contrast.stretched``),
unless it is over-exposed: its narrow span is white, not faintness, and spread, its pale
red cells came back as leukocytes.

Training prepares its photos the same way, so that the segmenter and the classifier
learn the images they are shown at prediction: every BCCD photo, most of TXL-PBC's BCD
fields and 12 of ``make eval``'s 20 synthetic fields span fewer than
``contrast.TARGET_SPAN`` grey levels and are spread before they are segmented.
"""

from __future__ import annotations

import numpy as np

from allseg.inference.contrast import stretched
from allseg.inference.field_of_view import blank_outside_field
from allseg.inference.illumination import exposed
from allseg.inference.monochrome import in_colour


def as_networks_see_it(image: np.ndarray, over_exposed: bool) -> tuple[np.ndarray, bool]:
    """The RGB ``uint8`` photo prepared for the networks, and whether it was monochrome.

    ``over_exposed``: as the scale estimate found it (``ResolvedScale.over_exposed``: white
    took red cells that would have been measured), in training as at prediction, so that
    both spread the same photos. A white slide alone is not over-exposure: 93 of Zheng
    Dataset 1's 300 crops are white over a quarter of the field.

    >>> faint = np.full((40, 40, 3), 200, np.uint8)
    >>> faint[10:20, 10:20] = (120, 90, 150)
    >>> seen, monochrome = as_networks_see_it(faint, over_exposed=False)
    >>> int(seen.min()), int(seen.max()), monochrome  # levels 90 .. 200 -> spread
    (60, 230, False)
    """
    image, monochrome = in_colour(image)
    image = exposed(blank_outside_field(image))
    return (image if over_exposed else stretched(image)), monochrome
