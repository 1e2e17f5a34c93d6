"""Test helper: a rewritten computation agrees with its reference in values and gradients."""

import torch


def assert_same_values_and_gradients(got: torch.Tensor, expected: torch.Tensor, sources) -> None:
    """``got`` equals ``expected``, and so do the gradients of their sums of squares
    with respect to ``sources`` (those ``expected`` does not depend on are skipped)."""
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad(got.square().sum(), sources, allow_unused=True)
    expected_grads = torch.autograd.grad(expected.square().sum(), sources, allow_unused=True)
    for grad, expected_grad in zip(grads, expected_grads):
        if expected_grad is not None:
            torch.testing.assert_close(grad, expected_grad)
