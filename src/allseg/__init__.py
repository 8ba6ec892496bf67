"""allseg: find, segment and flag lymphoblasts in blood smear images.

Research use only: allseg is not a medical device and never gives a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research use only. allseg is not a medical device: its output is not a diagnosis "
    "and must not be used for clinical decisions."
)
