"""How TensorFlow work is executed: TF2 functions, or TF 1.15 graph sessions (CANN's ``npu_bridge``).

The model, the steps' math and the checkpoint format are shared; only the runner differs. A runner
turns a graph-building function into a callable on NumPy arrays, reads variables to the host, sets
them from the host and writes and reads ``tf.train.Checkpoint``-format checkpoints (the same object
graph in both styles, so a generator trained in a session is recovered by a TF2 function, and back).

- ``Runner``: ``tf.function`` with an input signature; values are eager tensors (TF >= 2.6).
- ``SessionRunner``: placeholders fed to one ``Session.run`` per call, in the session's graph; the
  style of the seed and of CANN's TF 1.15 adapter, which compiles and places the graph itself.

Code that builds graphs for both must order stateful work explicitly (``tf.control_dependencies``):
a TF1 graph runs only what an output depends on, where a ``tf.function`` adds the order itself.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

Step = Callable[..., Any]


class Runner:
    """TF2: eager variables, ``tf.function`` for compiled calls."""

    graph_mode = False

    def function(self, fn: Step, signature: Sequence[tf.TensorSpec], jit_compile: bool = False,
                 loop: bool = False) -> Callable[..., Any]:
        """``fn`` on NumPy arrays, returning NumPy (the same nesting as ``fn``'s result).

        ``loop``: ``fn`` is one step of a multi-step call; the call takes every argument with a leading
        axis of steps and returns the mean of ``fn``'s scalar result over them (one compiled loop)."""
        if loop:
            fn = _stepped(fn)
        compiled = tf.function(fn, jit_compile=jit_compile, input_signature=list(signature))

        def call(*args: Any) -> Any:
            return tf.nest.map_structure(lambda t: t.numpy(), compiled(*args))

        return call

    def part(self, fn: Step, jit_compile: bool = False) -> Step:
        """``fn`` as a piece of a larger compiled call (its own XLA cluster when ``jit_compile``)."""
        return tf.function(fn, jit_compile=jit_compile)

    def value(self, variable: Any) -> np.ndarray:
        return variable.numpy()

    def assign(self, variables: Sequence[tf.Variable], values: Sequence[np.ndarray]) -> None:
        for variable, value in zip(variables, values):
            variable.assign(value)

    def initialize(self, variables: Sequence[tf.Variable]) -> None:
        """Eager variables hold their initial values already."""

    def checkpoint(self, **trackables: Any) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(**trackables)

    def write(self, checkpoint: Any, prefix: str) -> None:
        checkpoint.write(prefix)

    def read(self, checkpoint: Any, prefix: str, partial: bool) -> None:
        status = checkpoint.read(prefix)
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()

    def scalar_log(self, folder: str) -> ScalarLog:
        return ScalarLog(folder)


def _stepped(step: Step) -> Step:
    """A loop over the leading axis of the arguments, calling ``step`` on each slice; the mean result."""
    def steps(*args: tf.Tensor) -> tf.Tensor:
        n = tf.shape(args[0])[0]

        def body(i: tf.Tensor, total: tf.Tensor):
            return i + 1, total + step(*[a[i] for a in args])

        # One step at a time: step i + 1 reads the variables step i wrote.
        _, total = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)),
                                 parallel_iterations=1)
        return total / tf.cast(n, tf.float32)

    return steps


class SessionRunner(Runner):
    """TF 1.15 style: everything is built in ``session.graph`` and run by ``session.run``."""

    graph_mode = True

    def __init__(self, session: Any):
        self.session = session
        self._assigns: Dict[int, Any] = {}

    def function(self, fn: Step, signature: Sequence[tf.TensorSpec], jit_compile: bool = False,
                 loop: bool = False) -> Callable[..., Any]:
        # No XLA in a session: CANN compiles the graph itself (and the CPU stand-in has no need).
        with self.session.graph.as_default():
            feeds = [tf.compat.v1.placeholder(s.dtype, _one_step(s.shape) if loop else s.shape)
                     for s in signature]
            out = fn(*feeds)
        run = self.session.run

        if not loop:
            return lambda *args: run(out, dict(zip(feeds, args)))

        def call(*args: Any) -> Any:
            # One session.run per step, as the seed does (iterations_per_loop 1): the loop stays on
            # the host, so the device graph has no control flow around the collectives.
            results = [run(out, dict(zip(feeds, [a[i] for a in args]))) for i in range(len(args[0]))]
            return np.float32(np.mean(results))

        return call

    def part(self, fn: Step, jit_compile: bool = False) -> Step:
        return fn

    def value(self, variable: Any) -> np.ndarray:
        return self.session.run(variable.read_value() if hasattr(variable, "read_value") else variable)

    def assign(self, variables: Sequence[tf.Variable], values: Sequence[np.ndarray]) -> None:
        ops, feeds = [], {}
        for variable, value in zip(variables, values):
            key = id(variable)
            if key not in self._assigns:  # one placeholder + assign per variable, built once
                with self.session.graph.as_default():
                    ph = tf.compat.v1.placeholder(variable.dtype, variable.shape)
                    self._assigns[key] = (ph, variable.assign(ph).op)
            ph, op = self._assigns[key]
            ops.append(op)
            feeds[ph] = value
        self.session.run(ops, feeds)

    def initialize(self, variables: Sequence[tf.Variable]) -> None:
        with self.session.graph.as_default():
            self.session.run(tf.compat.v1.variables_initializer(list(variables)))

    def checkpoint(self, **trackables: Any) -> Any:
        with self.session.graph.as_default():
            return tf.compat.v1.train.Checkpoint(**trackables)

    def write(self, checkpoint: Any, prefix: str) -> None:
        with self.session.graph.as_default():
            checkpoint.write(prefix, session=self.session)

    def read(self, checkpoint: Any, prefix: str, partial: bool) -> None:
        # The object-graph reader under Checkpoint.restore: restore() itself would also create and
        # restore ``save_counter``, which TF2's Checkpoint.write does not save (both TF 1.15 and 2.x
        # keep this reader as ``_saver``, tensorflow/python/training/tracking/util.py).
        with self.session.graph.as_default():
            status = checkpoint._saver.restore(prefix)
            if partial:
                status.expect_partial()
            status.assert_existing_objects_matched()
            status.run_restore_ops(self.session)

    def scalar_log(self, folder: str) -> ScalarLog:
        return GraphScalarLog(folder, self.session.graph)


def _one_step(shape: tf.TensorShape) -> List[Optional[int]]:
    return tf.TensorShape(shape).as_list()[1:]


class ScalarLog:
    """TensorBoard scalars and images, TF2 summary API."""

    def __init__(self, folder: str):
        self._writer = tf.summary.create_file_writer(folder)

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        with self._writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)

    def images(self, step: int, images: Dict[str, np.ndarray]) -> None:
        """``images``: tag -> one grey uint8 picture [H, W]."""
        with self._writer.as_default(step=step):
            for tag, image in images.items():
                tf.summary.image(tag, image[None, :, :, None], max_outputs=1)

    def flush(self) -> None:
        self._writer.flush()


class GraphScalarLog(ScalarLog):
    """The same events from a session process: Summary protos written by TF1's FileWriter, no ops."""

    def __init__(self, folder: str, graph: Any):
        self._writer = tf.compat.v1.summary.FileWriter(folder, graph=None)
        self._graph = graph

    def _add(self, step: int, values: List[Any]) -> None:
        self._writer.add_summary(tf.compat.v1.Summary(value=values), global_step=step)

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        self._add(step, [tf.compat.v1.Summary.Value(tag=t, simple_value=float(v)) for t, v in values.items()])

    def images(self, step: int, images: Dict[str, np.ndarray]) -> None:
        from csgm.images import png_bytes

        self._add(step, [tf.compat.v1.Summary.Value(tag=t, image=tf.compat.v1.Summary.Image(
            height=img.shape[0], width=img.shape[1], colorspace=1, encoded_image_string=png_bytes(img)))
            for t, img in images.items()])
