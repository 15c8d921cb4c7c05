"""Pure, jittable training and evaluation steps on NNX (graphdef, state) pairs.

The state goes in and comes out as a pytree of arrays so that the jitted step can donate it and
so that orbax can save it as is. Models are in train mode inside `train_step` (batch statistics,
running averages updated) and in eval mode inside `eval_step`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def cross_entropy(logits, labels):
    """Per-example softmax cross-entropy (the official `nn.CrossEntropyLoss` before the mean)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def make_train_step(schedule: optax.Schedule):
    """The train step: forward, the adder custom-VJP backward, `adder_sgd` update.

    Returns `train_step(graphdef, state, batch) -> (state, metrics)` for a (model, optimizer)
    graphdef/state split; metrics are scalars for the global batch.
    """

    def train_step(graphdef, state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        model.train()

        def loss_fn(model):
            logits = model(batch["image"])
            return cross_entropy(logits, batch["label"]).mean(), logits

        learning_rate = schedule(optimizer.step[...])
        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == batch["label"]),
            "learning_rate": learning_rate,
        }
        return nnx.state((model, optimizer)), metrics

    return train_step


def eval_step(graphdef, state, batch):
    """Sums over the real (mask == True) examples of a batch: correct top-1 and top-5, loss.

    Args:
      graphdef, state: an `nnx.split(model)`.
      batch: {'image', 'label', 'mask'}; the mask is False on padding.
    """
    model = nnx.merge(graphdef, state)
    model.eval()
    logits = model(batch["image"]).astype(jnp.float32)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
        "correct_top1": jnp.sum((jnp.argmax(logits, axis=-1) == labels) * mask),
        "correct_top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "loss_sum": jnp.sum(cross_entropy(logits, labels) * mask),
        "count": jnp.sum(mask),
    }
