"""Learning-rate schedules and optimizers of one phase.

Each phase gets a fresh optimizer and its own warmup + cosine decay: phase 2 starts from a trained head at a
much lower rate, and warming up again keeps the first unfrozen steps from wrecking the pretrained layers.
"""

import keras


def learning_rate(peak: float, steps_per_epoch: int, epochs: int, schedule: str, warmup_epochs: float,
                  final_fraction: float):
    """cosine: linear warmup from 0 to peak, then cosine decay to final_fraction * peak by the last step;
    constant: the peak (a float, so ReduceLROnPlateau can lower it)."""
    if schedule == "constant":
        return peak
    total = max(1, steps_per_epoch * epochs)
    warmup = min(round(warmup_epochs * steps_per_epoch), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=total - warmup, alpha=final_fraction, warmup_target=peak,
        warmup_steps=warmup)


def optimizer(name: str, rate, momentum: float, weight_decay: float) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum, nesterov=True)
    if name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=weight_decay)
    return keras.optimizers.Adam(rate)
