"""Deep BSDE speed against a reference-style implementation, interleaved in one run.

The reference implementation's 45-48 ms per iteration (`../shared/ANCHORS.md`) was measured on
another machine, and this one's speed changes by up to 4x from minute to minute (its float64
matmul rate has read 23 and 92 GFLOP/s on different runs). A ratio needs both codes timed side by
side. This script builds a stand-in written the way the reference is written and alternates
blocks of 100 training iterations of it and of `DeepBSDE` (the main job's defaults: one `fit`,
epochs of 100 steps, validation after each), so that both see the same machine state. Each block
is timed in chunks of 10 steps; the figure is the median over blocks of the ratio of the two
median chunk times. Whole-block ratios are reported too: they include the validation, and
they are where a stall shows (before tf.data's autotuning was switched off for the placeholder
data, the first steps of an epoch that followed a few seconds' pause took 1.4-1.9 s longer).

The stand-in (our code, the reference's structure): HJB d = 100, N = 20, batch 64, float64;
Brownian increments and paths drawn with NumPy (legacy generator) on the host every iteration and
laid out (batch, d, N); one Keras subnetwork per interior step, BN -> 2 x [Dense(d + 10, no bias)
-> BN -> ReLU] -> Dense(d) -> BN, output / d, called in a Python loop over the steps; trainable
y0 (uniform in [0, 1]) and z0 (uniform in [-0.1, 0.1]); loss with the reference's clipping at
|delta| = 50; Adam 1e-2 constant; a `tf.function` training step without XLA; the 256-path
validation loss every 100 iterations. Its final loss and y0 are printed as a fidelity check: the
reference ends at loss ~Var g(X_T) = 0.0200 and a 0.15-0.21% error after 2000 iterations.

    python benchmarks/deep_bsde_speed.py                 # 20 pairs of 100 iterations, ~3 min
    python benchmarks/deep_bsde_speed.py --blocks 5 --output /tmp/speed.json

Writes `benchmarks/results/deep_bsde_speed.json`.
"""

import argparse
import os
import time

import keras
import numpy as np
import tensorflow as tf
from deep_bsde import matmul_gflops  # benchmarks/deep_bsde.py

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.models.deep_bsde import DeepBSDE
from mlcmk.problems.bsde import HJBLQ
from mlcmk.training.bsde_solver import learning_rate_schedule

DELTA_CLIP = 50.0


class ReferenceSubNet(keras.Model):
    """BN -> [Dense(no bias) -> BN -> ReLU] x 2 -> Dense -> BN, the reference's subnetwork."""

    def __init__(self, dim, hidden, seed, **kwargs):
        super().__init__(**kwargs)

        def bn(i):
            return keras.layers.BatchNormalization(
                momentum=0.99, epsilon=1e-6,
                beta_initializer=keras.initializers.RandomNormal(0.0, 0.1, seed=seed + i),
                gamma_initializer=keras.initializers.RandomUniform(0.1, 0.5, seed=seed + 50 + i))
        self.bns = [bn(i) for i in range(len(hidden) + 2)]
        self.denses = [keras.layers.Dense(
            h, use_bias=False, kernel_initializer=keras.initializers.GlorotUniform(seed + 100 + i))
            for i, h in enumerate(hidden)]
        self.denses.append(keras.layers.Dense(
            dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 200)))

    def call(self, x, training=False):
        x = self.bns[0](x, training=training)
        for i, dense in enumerate(self.denses[:-1]):
            x = tf.nn.relu(self.bns[i + 1](dense(x), training=training))
        return self.bns[-1](self.denses[-1](x), training=training)


class ReferenceStyleHJB:
    """The reference's HJB solver structure, written here for timing (see the module doc)."""

    def __init__(self, dim=100, total_time=1.0, num_steps=20, lam=1.0, batch_size=64,
                 valid_size=256, learning_rate=1e-2, seed=0):
        self.dim, self.n, self.lam = dim, num_steps, lam
        self.dt = total_time / num_steps
        self.batch_size = batch_size
        self.rng = np.random.RandomState(seed)
        init = np.random.RandomState(seed + 1)
        self.y_init = tf.Variable(init.uniform(0.0, 1.0, size=[1]))
        self.z_init = tf.Variable(init.uniform(-0.1, 0.1, size=[1, dim]))
        self.subnets = [ReferenceSubNet(dim, (dim + 10, dim + 10), seed=1000 * (i + 1),
                                        name=f"subnet_{i}")
                        for i in range(num_steps - 1)]
        for net in self.subnets:  # built by one call, as in the reference
            net(tf.zeros((1, dim), tf.float64))
        self.variables = [self.y_init, self.z_init] + [
            v for net in self.subnets for v in net.trainable_variables]
        self.optimizer = keras.optimizers.Adam(learning_rate, epsilon=1e-8)
        self.valid = self.sample(valid_size)
        self._train = tf.function(self._train_step)
        self._valid_loss = tf.function(lambda dw, x: self.loss(dw, x, training=False))

    def sample(self, num):
        dw = self.rng.standard_normal(size=[num, self.dim, self.n]) * np.sqrt(self.dt)
        x = np.zeros([num, self.dim, self.n + 1])
        for i in range(self.n):
            x[:, :, i + 1] = x[:, :, i] + np.sqrt(2.0) * dw[:, :, i]
        return dw, x

    def generator(self, z):
        # sigma = sqrt(2), Z = sigma^T grad u: f = -lambda |grad u|^2 = -(lambda / 2) |Z|^2.
        return -0.5 * self.lam * tf.reduce_sum(tf.square(z), 1, keepdims=True)

    def terminal(self, x):
        return tf.math.log((1.0 + tf.reduce_sum(tf.square(x), 1, keepdims=True)) / 2.0)

    def loss(self, dw, x, training):
        ones = tf.ones(tf.stack([tf.shape(dw)[0], 1]), tf.float64)
        y = ones * self.y_init
        z = tf.matmul(ones, self.z_init)
        for t in range(self.n - 1):
            y = y - self.dt * self.generator(z) + tf.reduce_sum(z * dw[:, :, t], 1, keepdims=True)
            z = self.subnets[t](x[:, :, t + 1], training=training) / self.dim
        y = y - self.dt * self.generator(z) + tf.reduce_sum(z * dw[:, :, -1], 1, keepdims=True)
        delta = y - self.terminal(x[:, :, -1])
        return tf.reduce_mean(tf.where(tf.abs(delta) < DELTA_CLIP, tf.square(delta),
                                       2 * DELTA_CLIP * tf.abs(delta) - DELTA_CLIP**2))

    def _train_step(self, dw, x):
        with tf.GradientTape() as tape:
            loss = self.loss(dw, x, training=True)
        self.optimizer.apply(tape.gradient(loss, self.variables), self.variables)

    def train(self, iterations, chunk=10):
        """`iterations` steps on fresh host-drawn paths, then the validation loss.

        Returns (validation loss, y0, seconds per chunk of `chunk` steps).
        """
        chunks = []
        for i in range(iterations):
            if i % chunk == 0:
                start = time.perf_counter()
            self._train(*self.sample(self.batch_size))
            if i % chunk == chunk - 1:
                self.y_init.numpy()  # waits for the step
                chunks.append(time.perf_counter() - start)
        return float(self._valid_loss(*self.valid)), float(self.y_init.numpy()[0]), chunks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20,
                        help="pairs of 100-iteration blocks (default 20: 2000 iterations each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                        "deep_bsde_speed.json"))
    args = parser.parse_args()
    if args.blocks < 2:
        parser.error(f"--blocks must be >= 2 (the first pair is warm-up); got {args.blocks}")
    config.set_precision("float64")
    config.set_seed(args.seed)
    steps = 100
    problem = HJBLQ()
    reference = problem.reference_value()

    gflops = [matmul_gflops(tf.float64)]
    t = time.perf_counter()
    ours = DeepBSDE(problem, seed=args.seed)
    ours.compile(optimizer=keras.optimizers.Adam(
        learning_rate_schedule(1e-3, steps * args.blocks)))
    ref = ReferenceStyleHJB(seed=args.seed)
    print(f"built both in {time.perf_counter() - t:.1f} s; float64 matmul "
          f"{gflops[0]:.1f} GFLOP/s", flush=True)
    blocks = []

    class Interleave(keras.callbacks.Callback):
        """Times each epoch of ours (validation included) and its chunks of
        `steps_per_execution` steps, then runs a block of the stand-in."""

        def on_epoch_begin(self, epoch, logs=None):
            self.marks = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):  # every steps_per_execution steps
            self.marks.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            t_ours = time.perf_counter() - self.marks[0]
            ours_chunks = np.diff(self.marks)
            t = time.perf_counter()
            ref_loss, ref_y0, ref_chunks = ref.train(steps, chunk=ours.steps_per_execution)
            t_ref = time.perf_counter() - t
            per_step = 1e3 / ours.steps_per_execution
            row = {"ours_ms": 1e3 * t_ours / steps, "reference_style_ms": 1e3 * t_ref / steps,
                   "ours_chunk_median_ms": per_step * float(np.median(ours_chunks)),
                   "reference_style_chunk_median_ms": per_step * float(np.median(ref_chunks)),
                   "ours_loss": float(logs["val_loss"]), "ours_y0": ours.y0_value(),
                   "reference_style_loss": ref_loss, "reference_style_y0": ref_y0}
            row["ratio"] = row["reference_style_chunk_median_ms"] / row["ours_chunk_median_ms"]
            blocks.append(row)
            print(f"block {epoch + 1:2d}: ours {row['ours_chunk_median_ms']:6.2f} ms/it "
                  f"(block {row['ours_ms']:6.2f}; loss {row['ours_loss']:.5f}, y0 "
                  f"{row['ours_y0']:.5f}) | reference-style "
                  f"{row['reference_style_chunk_median_ms']:6.2f} ms/it (block "
                  f"{row['reference_style_ms']:6.2f}; loss {ref_loss:.5f}, y0 {ref_y0:.5f}) | "
                  f"ratio {row['ratio']:5.2f}", flush=True)

    # One fit, as `solve` and the main job run it: epochs of 100 steps, each followed by the
    # stand-in's 100 steps, so that both codes meet the same machine state.
    ours.fit(epochs=args.blocks, steps_per_epoch=steps, verbose=0, callbacks=[Interleave()])
    gflops.append(matmul_gflops(tf.float64))
    steady = blocks[1:]  # the first pair pays for tracing (and XLA compilation of ours)
    ratios = [b["ratio"] for b in steady]
    ours_ms = [b["ours_chunk_median_ms"] for b in steady]
    ref_ms = [b["reference_style_chunk_median_ms"] for b in steady]
    block_ratios = [b["reference_style_ms"] / b["ours_ms"] for b in steady]
    trivial = ours.trivial_loss  # Var g(X_T) on each code's own 256 validation paths
    ref_trivial = float(np.var(ref.terminal(ref.valid[1][:, :, -1]).numpy()))
    last = blocks[-1]
    out = {
        "config": {"problem": "hjb_lq", "dim": 100, "num_steps": 20, "batch_size": 64,
                   "precision": "float64", "iterations_per_block": steps,
                   "blocks": args.blocks, "seed": args.seed},
        "matmul_gflops_float64_before_after": gflops,
        "ratio_median": float(np.median(ratios)),
        "ratio_min_max": [float(min(ratios)), float(max(ratios))],
        "ours_ms_median": float(np.median(ours_ms)),
        "reference_style_ms_median": float(np.median(ref_ms)),
        "ratio_of_medians": float(np.median(ref_ms) / np.median(ours_ms)),
        "block_total_ratio_median": float(np.median(block_ratios)),
        "block_total_ratio_min_max": [float(min(block_ratios)), float(max(block_ratios))],
        "first_block_s": {"ours": blocks[0]["ours_ms"] * steps / 1e3,
                          "reference_style": blocks[0]["reference_style_ms"] * steps / 1e3},
        "reference_value": reference,
        "var_g": {"ours_validation": trivial, "reference_style_validation": ref_trivial},
        "final": {"ours_y0_rel_error": abs(last["ours_y0"] - reference) / reference,
                  "ours_loss_over_var_g": last["ours_loss"] / trivial,
                  "reference_style_y0_rel_error":
                      abs(last["reference_style_y0"] - reference) / reference,
                  "reference_style_loss_over_var_g": last["reference_style_loss"] / ref_trivial},
        "blocks": blocks,
    }
    print(f"median ratio (reference-style / ours, per pair of blocks, median chunk times): "
          f"{out['ratio_median']:.2f}x [{out['ratio_min_max'][0]:.2f}, "
          f"{out['ratio_min_max'][1]:.2f}]; medians {out['reference_style_ms_median']:.2f} / "
          f"{out['ours_ms_median']:.2f} ms/it; whole blocks (stalls, validation included): "
          f"{out['block_total_ratio_median']:.2f}x [{out['block_total_ratio_min_max'][0]:.2f}, "
          f"{out['block_total_ratio_min_max'][1]:.2f}]; float64 matmul {gflops[0]:.1f} -> "
          f"{gflops[1]:.1f} GFLOP/s")
    f = out["final"]
    print(f"after {steps * args.blocks} iterations: ours y0 error {f['ours_y0_rel_error']:.2e}, "
          f"loss / Var g {f['ours_loss_over_var_g']:.3f}; reference-style y0 error "
          f"{f['reference_style_y0_rel_error']:.2e}, loss / Var g "
          f"{f['reference_style_loss_over_var_g']:.3f}")
    write_json(args.output, out)
    print("written", args.output)


if __name__ == "__main__":
    main()
