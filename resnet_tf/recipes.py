"""The paper's training recipes as plain data.

``imagenet`` (Sec. 3.4): SGD with momentum 0.9, weight decay 1e-4, batch 256,
learning rate 0.1 (scaled by batch / 256), divided by 10 when the validation
error plateaus (or at configured epochs), up to 600k iterations, no dropout.

``cifar`` (Sec. 4.2): batch 128, learning rate 0.1, divided by 10 at 32k and
48k iterations, stop at 64k; weight decay 1e-4, momentum 0.9; the paper's
45k/5k train/validation split is optional; ResNet-110 and deeper warm up at
0.01 until the training error falls below 80% (about 400 iterations).

When a run is shortened (``epochs`` or ``iterations``), step boundaries keep
their fraction of the run (32k/64k = 50%, 48k/64k = 75%).
"""

import dataclasses
from typing import Optional


@dataclasses.dataclass
class Recipe:
    """A training configuration. Every field can be overridden.

    Attributes:
        name: the recipe's name.
        preprocessing: "imagenet" or "cifar" (see ``data.preprocessing``).
        batch_size: global batch size.
        base_lr: learning rate at batch ``lr_batch``; the rate used is
            ``base_lr * batch_size / lr_batch`` (linear scaling).
        lr_batch: the batch size ``base_lr`` refers to.
        momentum, weight_decay: SGD momentum; the paper's lambda.
        schedule: "steps" (divide by ``lr_factor`` at ``step_fractions`` of the
            run, or at ``step_epochs``) or "plateau" (divide when the
            validation error stops improving for ``plateau_patience`` epochs).
        max_iterations: the full run's length in iterations.
        warmup_lr: a smaller rate to start with, kept until the running
            training error falls below ``warmup_until_error``; "auto" uses it
            for CIFAR depths >= 110 as the paper did; None turns it off.
        val_fraction: hold out this fraction of the training data for
            validation when the source has no validation split.
        label_smoothing: 0 (the paper) or e.g. 0.1.
        clipnorm: gradient clipping by global norm (None: off).
    """

    name: str
    preprocessing: str
    batch_size: int
    base_lr: float
    lr_batch: int
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "steps"
    step_fractions: tuple = ()
    step_epochs: Optional[tuple] = None
    lr_factor: float = 0.1
    plateau_patience: int = 5
    max_iterations: int = 64_000
    warmup_lr: object = None
    warmup_until_error: float = 0.8
    val_fraction: Optional[float] = None
    label_smoothing: float = 0.0
    clipnorm: Optional[float] = None

    def __post_init__(self):
        if self.schedule not in ("steps", "plateau"):
            raise ValueError(f"schedule must be 'steps' or 'plateau', got "
                             f"{self.schedule!r}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.base_lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.base_lr}.")

    @property
    def learning_rate(self):
        return self.base_lr * self.batch_size / self.lr_batch

    def resolved_warmup(self, family, depth):
        if self.warmup_lr == "auto":
            return 0.01 if family == "cifar" and depth >= 110 else None
        return self.warmup_lr

    def to_dict(self):
        return dataclasses.asdict(self)


RECIPES = {
    "imagenet": Recipe(
        name="imagenet", preprocessing="imagenet", batch_size=256, base_lr=0.1,
        lr_batch=256, schedule="plateau", max_iterations=600_000,
        plateau_patience=5),
    "cifar": Recipe(
        name="cifar", preprocessing="cifar", batch_size=128, base_lr=0.1,
        lr_batch=128, schedule="steps", step_fractions=(0.5, 0.75),
        max_iterations=64_000, warmup_lr="auto"),
}


def get_recipe(name, **overrides):
    """A copy of a named recipe with ``overrides`` applied (None ignored)."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; use one of {sorted(RECIPES)}.")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"Unknown recipe field(s) {unknown}; fields are "
                         f"{sorted(fields)}.")
    return dataclasses.replace(RECIPES[name], **overrides)
