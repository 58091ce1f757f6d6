"""The one place aiscan imports Keras, and with it TensorFlow: quietly.

Every module of the model stack takes ``keras`` from here. TensorFlow's C++ start-up lines (absl's
pre-initialisation notice, oneDNN, CPU features, CUDA plugin registration) are written straight to
file descriptor 2 while its libraries load, whatever the logging settings, so the import runs with
that descriptor captured and every other line is passed on.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# TensorFlow reads this once, when its C++ runtime loads: it must be set before the import below.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Start-up lines that say nothing about the user's command; anything else still reaches stderr.
STARTUP_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "  # absl/glog INFO and WARNING records
    rb"|E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] Unable to register cu(DNN|FFT|BLAS) factory"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    rb"|\d{4}-\d\d-\d\d [\d:.]+: [IW] (tensorflow|external|xla)/)"
)


@contextmanager
def native_stderr_filtered(noise: re.Pattern[bytes] = STARTUP_NOISE) -> Iterator[None]:
    """Capture file descriptor 2 for the block, then write back the lines that are not ``noise``."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured if not noise.match(line))
            if kept:
                os.write(2, kept)


with native_stderr_filtered():
    import keras as keras

try:
    from absl import logging as absl_logging
except ImportError:  # a backend without absl
    pass
else:
    # absl's Python records (e.g. "Compiled the loaded model, but the compiled metrics ...") are
    # not the user's business on a terminal.
    absl_logging.set_verbosity(absl_logging.ERROR)

__all__ = ["keras"]
