"""Work run in a thread of its own: results, errors, interrupts, first calls of programs."""

import signal
import threading

import keras
import numpy as np
import tensorflow as tf

from mlcmk._threads import compiled_in_worker, in_worker_thread
from mlcmk.testing import TestCase


class WorkerThreadTest(TestCase):
    def test_worker_thread_returns_raises_and_stops_on_interrupt(self):
        caller = threading.get_ident()
        stop = threading.Event()
        policy = keras.config.dtype_policy().name
        keras.config.set_dtype_policy("float16")
        try:
            ident, name = in_worker_thread(
                lambda: (threading.get_ident(), keras.config.dtype_policy().name), stop)
        finally:
            keras.config.set_dtype_policy(policy)
        self.assertNotEqual(ident, caller)
        self.assertEqual(name, "float16")  # the caller's policy, though kept per thread

        def fails():
            raise ValueError("from the worker")

        with self.assertRaisesRegex(ValueError, "from the worker"):
            in_worker_thread(fails, stop)
        with tf.distribute.OneDeviceStrategy("/cpu:0").scope():  # its scope is per thread
            self.assertEqual(in_worker_thread(threading.get_ident, stop), caller)
        # An interrupt of the caller (Ctrl-C; here sent to the thread that runs this test)
        # sets `stop`, waits for the worker to see it and return, and is raised.
        self.assertIs(threading.current_thread(), threading.main_thread())
        seen = []

        def worker():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            seen.append(stop.wait(10))
            return "stopped"

        # Python's own SIGINT handler (whatever the test runner or an earlier test installed).
        handler = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with self.assertRaises(KeyboardInterrupt):
                in_worker_thread(worker, stop)
        finally:
            signal.signal(signal.SIGINT, handler)
        self.assertEqual(seen, [True])
        self.assertFalse(any(t.name == "mlcmk-worker" for t in threading.enumerate()))

    def test_first_call_per_shape_runs_in_a_worker_thread(self):
        caller = threading.get_ident()
        threads = []

        def program(x, y):
            threads.append(threading.get_ident())
            return x.sum() + y.sum()

        call = compiled_in_worker(program)
        a, b, c = np.ones(3), np.ones((2, 2)), np.ones(4)
        results = [call(a, b), call(a, b), call(c, b), call(c, b), call(a, b)]
        self.assertEqual(results, [7.0, 7.0, 8.0, 8.0, 7.0])
        # New shapes (when XLA would compile): in a worker; the shapes seen: in the caller.
        self.assertNotEqual(threads[0], caller)
        self.assertNotEqual(threads[2], caller)
        self.assertEqual([threads[i] for i in (1, 3, 4)], [caller] * 3)
        self.assertEqual(in_worker_thread(lambda: "no stop event"), "no stop event")

        def fails(x):
            raise ValueError("from the program")

        with self.assertRaisesRegex(ValueError, "from the program"):
            compiled_in_worker(fails)(a)
