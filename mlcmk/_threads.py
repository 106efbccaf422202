"""Running work in a thread of its own (to keep XLA's compiler out of the caller's heap)."""

import threading


def in_worker_thread(fn, stop=None):
    """Returns `fn()` run in a new thread, and re-raises its exception in the caller.

    Keeps what runs there (XLA's compiler: `finetune_closure`, the first call of a compiled
    moment solve) from slowing the caller's later memory allocations and so its NumPy work:
    glibc gives threads malloc arenas of their own, and the slowdown stays in the arena the
    compile used (with one arena for all threads, `MALLOC_ARENA_MAX=1`, the worker thread no
    longer helps; benchmarks/README.md, stops 35 to 37). Keras' dtype policy (kept per
    thread) is carried over; under a `tf.distribute` strategy (its scope is per thread too)
    `fn` runs in the caller's thread. An interrupt of the caller sets the `threading.Event`
    `stop` (if given), which `fn` should check between steps, waits for `fn` to return and is
    re-raised.
    """
    import keras
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return fn()
    policy = keras.config.dtype_policy()
    out = {}

    def target():
        keras.config.set_dtype_policy(policy)
        try:
            out["value"] = fn()
        except BaseException as err:  # re-raised in the caller
            out["error"] = err

    thread = threading.Thread(target=target, name="mlcmk-worker", daemon=True)
    try:
        thread.start()  # (an interrupt can arrive while it waits for the thread to start)
        while thread.is_alive():
            thread.join(0.05)
    except KeyboardInterrupt:
        if stop is not None:
            stop.set()
        thread.join()
        raise
    if "error" in out:
        raise out["error"]
    return out["value"]


def compiled_in_worker(program):
    """`program` (a `tf.function(jit_compile=True)` of tensors) with each first call for new
    argument shapes, the one that makes XLA compile, run in `in_worker_thread`."""
    compiled_shapes = set()

    def call(*args):
        shapes = tuple(tuple(arg.shape) for arg in args)
        if shapes in compiled_shapes:
            return program(*args)
        out = in_worker_thread(lambda: program(*args))
        compiled_shapes.add(shapes)
        return out

    return call
