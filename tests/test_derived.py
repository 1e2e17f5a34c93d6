"""derived_tensor: reused at inference, recomputed whenever a source could have changed."""

import copy

import torch

from qieemo_sb.derived import derived_tensor


class Scaled(torch.nn.Module):
    """A module whose forward reads a tensor derived from its weight."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 4))
        self._derived = {}
        self.computed = 0

    def doubled(self):
        def compute():
            self.computed += 1
            return 2 * self.weight

        return derived_tensor(self._derived, "doubled", [self.weight], compute)

    def forward(self, x):
        return x @ self.doubled()


def test_reused_while_the_weights_stay_and_recomputed_after_each_change():
    torch.manual_seed(0)
    module, x = Scaled(), torch.randn(2, 3)
    with torch.inference_mode():
        first = module(x)
        assert torch.equal(module(x), first) and module.computed == 1
    # An optimizer step (in place, under no_grad) changes the weight.
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module(x).sum().backward()
    optimizer.step()
    computed = module.computed
    with torch.no_grad():
        torch.testing.assert_close(module(x), x @ (2 * module.weight))
    assert module.computed == computed + 1
    # load_state_dict copies in place; .double() replaces the parameter's tensor.
    module.load_state_dict({"weight": torch.ones(3, 4)})
    with torch.no_grad():
        torch.testing.assert_close(module(x), x @ torch.full((3, 4), 2.0))
        module.double()
        assert module.doubled().dtype == torch.float64
    # A deep copy whose weight is then changed does not see the original's value.
    clone = copy.deepcopy(module)
    with torch.no_grad():
        clone.weight.zero_()
        assert clone.doubled().abs().sum() == 0
        assert module.doubled().abs().sum() > 0


def test_training_recomputes_and_gradients_reach_the_source():
    module, x = Scaled(), torch.randn(2, 3)
    module(x).sum().backward()
    module(x).sum().backward()
    assert module.computed == 2
    torch.testing.assert_close(module.weight.grad, 2 * 2 * x.sum(0)[:, None].expand(3, 4))


def test_a_new_tensor_is_never_taken_for_a_freed_one():
    """The entry holds its sources: a later tensor (maybe at the same address) misses."""
    cache = {}
    with torch.no_grad():
        for value in range(5):
            source = torch.full((64,), float(value))
            assert derived_tensor(cache, "sum", [source], source.sum).item() == 64 * value
