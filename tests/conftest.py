"""Pytest set-up: two logical CPU devices for the distribution tests.

Must run before any TensorFlow op, which is why it happens at import time.
"""

import mlcmk

mlcmk.config.configure_logical_cpus(2)
