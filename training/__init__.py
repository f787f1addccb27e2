"""Training: readers, the trainer, evaluation, data-parallel and streamed training.

Importing the package makes OpenMP's idle threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``,
unless the variable is already set), before anything here loads torch and with it the OpenMP runtime.
By default an OpenMP worker busy-waits after each parallel region; with torch's intra-op threads
filling the cores, those spinning threads take the CPU from the background batch reader, from the
other ranks on the host and from every other process. Measured on the 2-core machine under load,
one DeepFM-D epoch over frappe_ctr took 2 to 4 times the CPU time with spinning, in memory as well
as streamed (README, "training at scale"). ``OMP_WAIT_POLICY=ACTIVE`` restores spinning.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
