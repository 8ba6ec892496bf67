"""Dataset records and the readers that produce them."""

from allseg.data.record import Record

__all__ = ["Record"]
