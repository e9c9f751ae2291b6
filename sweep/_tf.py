"""The one place TensorFlow is imported.

tfmot 0.8 supports Keras 2 only: TensorFlow must be told to use the legacy tf-keras
package *before* it is first imported, or `prune_low_magnitude` rejects the models.
Every module that needs TensorFlow, tf-keras or tfmot imports them from here.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# psycopg's libpq brings its own OpenSSL. Loaded after TensorFlow, its first TLS connection to
# PostgreSQL (`sslmode=require`, or the default `prefer` on a server with TLS) aborts the process
# with "free(): invalid pointer"; loaded first, it works (tests/test_secrets_and_servers.py).
with contextlib.suppress(ImportError):
    import psycopg  # noqa: F401


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """TensorFlow's C++ lines that ignore TF_CPP_MIN_LOG_LEVEL (oneDNN and CUDA at start-up,
    before absl logging starts; the TFLite converter's "fully_quantize: 0, ..."; LiteRT's
    "Created TensorFlow Lite XNNPACK delegate") go straight to file descriptor 2, through
    our progress display: hide them (`SWEEP_DEBUG=1` shows them). Python errors still raise."""
    if os.environ.get("SWEEP_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# The import creates most of the objects the process will ever hold, all alive until it ends.
# The collector's automatic passes would scan them again and again as they pile up, and every
# full pass after: it is paused during the import and what exists then is frozen, out of every
# later pass. The import's own garbage (a few thousand objects) is frozen too: collecting it
# would take one full pass. Measured in benchmarks/README.md, section 5.
_collecting = gc.isenabled()
gc.disable()
try:
    with quiet_native_stderr():
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras

        # the TFLite flatbuffer schema's object API and its reader and writer, to sign a file the
        # converter's freeze path made (sweep.modeling.tflite),
        from tensorflow.lite.python import schema_py_generated as tflite_schema

        # Not public API (already loaded by the imports above), each used in one place:
        # the post-conversion pass behind tf.lite.Optimize.EXPERIMENTAL_SPARSITY (sweep.modeling.tflite),
        from tensorflow.lite.python.convert import mlir_sparsify
        from tensorflow.lite.tools import flatbuffer_utils as tflite_flatbuffers

        # the way back from enable_op_determinism, there since TF 2.9 (sweep.modeling.training),
        from tensorflow.python.framework.config import disable_op_determinism

        # tfmot's table of which layers it prunes and which of their weights (sweep.modeling.pruning),
        from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import (
            PruneRegistry,
        )

        # and the wrapper class prune_low_magnitude puts around a layer (sweep.modeling.training).
        from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
            PruneLowMagnitude,
        )

    tf.get_logger().setLevel("ERROR")
    gc.freeze()  # before the collector runs again: a pass now would scan every new object
finally:
    if _collecting:
        gc.enable()

__all__ = ["PruneLowMagnitude", "PruneRegistry", "disable_op_determinism", "keras", "mlir_sparsify",
           "quiet_native_stderr", "tf", "tflite_flatbuffers", "tflite_schema", "tfmot"]
