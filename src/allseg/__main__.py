"""Allow ``python -m allseg``."""

from allseg.cli import main

main()
