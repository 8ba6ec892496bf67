"""One small thread pool for work that releases the GIL (OpenCV, numpy, ISA-L deflate).

PNG bands, per-cell measurements and per-cell upsampling run side by side on it. No
task waits on the pool itself (only callers do), so sharing it cannot deadlock.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

WORKERS = max(1, min(4, os.cpu_count() or 1))
POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="allseg")
