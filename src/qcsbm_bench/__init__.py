"""qcsbm-bench: does it pay for a score model to be conservative?

A reproducible benchmark of conservative (CSBM), unconstrained (USBM) and
quasi-conservative (QCSBM) score-based generative models.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
