"""Step timing, progress messages and the per-epoch evaluation callback."""

import time


class Timer:
    """Wall seconds of each named step (``steps``) since ``t0``."""

    def __init__(self):
        self.t0 = time.time()
        self.steps = {}

    def step(self, name, fn):
        t = time.time()
        out = fn()
        self.steps[name] = round(time.time() - t, 1)
        return out


def say(text, verbose):
    if verbose:
        print(text, flush=True)


def epoch_callback(fn):
    """A Keras callback calling ``fn(model)`` after every epoch; the values
    in its ``.values``."""
    import keras

    class EvalEachEpoch(keras.callbacks.Callback):
        """``fn(model)`` after every epoch; the values in ``.values``."""

        def __init__(self):
            super().__init__()
            self.values = []

        def on_epoch_end(self, epoch, logs=None):
            self.values.append(fn(self.model))

    return EvalEachEpoch()
