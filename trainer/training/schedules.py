"""Learning-rate schedules and optimizers of one phase.

Each phase gets a fresh optimizer and its own warmup + cosine decay: phase 2 starts from a trained head at a
much lower rate, and warming up again keeps the first unfrozen steps from wrecking the pretrained layers.
"""

import keras


def learning_rate(peak: float, steps_per_epoch: int, epochs: int, schedule: str, warmup_epochs: float,
                  final_fraction: float):
    """cosine: linear warmup from 0 to peak, then cosine decay to final_fraction * peak by the last step;
    constant: the peak (a float, so ReduceLROnPlateau can lower it). Steps are batches: with gradient
    accumulation the optimizer's step counter, which the schedule reads, still advances once per batch."""
    if schedule == "constant":
        return peak
    total = max(1, steps_per_epoch * epochs)
    warmup = min(round(warmup_epochs * steps_per_epoch), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=total - warmup, alpha=final_fraction, warmup_target=peak,
        warmup_steps=warmup)


def scaled(rate, factor: float):
    """rate (a float or learning_rate's CosineDecay) times factor at every step (--layer_decay's groups)."""
    if factor == 1:
        return rate
    if not isinstance(rate, keras.optimizers.schedules.CosineDecay):
        return rate * factor
    settings = rate.get_config()
    target = settings["warmup_target"]
    return keras.optimizers.schedules.CosineDecay.from_config({
        **settings, "initial_learning_rate": settings["initial_learning_rate"] * factor,
        "warmup_target": None if target is None else target * factor})


def optimizer(kind: str, rate, momentum: float, weight_decay: float, **options) -> keras.optimizers.Optimizer:
    """kind: --optimizer; options: Keras' common optimizer arguments (use_ema, ema_momentum,
    gradient_accumulation_steps, name)."""
    if kind == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum, nesterov=True, **options)
    if kind == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=weight_decay, **options)
    return keras.optimizers.Adam(rate, **options)
