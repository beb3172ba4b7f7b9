"""Memory budget: parsing, chunked results equal unchunked ones, clear errors."""

from __future__ import annotations

import pytest
import torch

from snncertify import MemoryBudgetError, certify
from snncertify.budget import FIXED_OVERHEAD, CostModel, default_budget, parse_budget, plan_chunks
from snncertify.methods import method_cost

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


@pytest.fixture
def small_net(fc_net):
    """Flatten, 16-12-5, beta 0.8, threshold 0.5, seeded 0: input ``[B, 4, 4]``, 5 classes."""
    return fc_net(beta=0.8, threshold=0.5)


@pytest.mark.parametrize("text, expected", [
    ("4GB", 4 * 10**9), ("512MiB", 512 * 2**20), ("1.5 kb", 1500), (2048, 2048), (1e6, 10**6)])
def test_parse_budget_reads_units_and_numbers(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("bad", ["four GB", "4 parsecs", -1, 0, float("nan"), True, [4]])
def test_parse_budget_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="memory_budget"):
        parse_budget(bad)


def test_default_budget_is_a_fraction_of_available_memory(small_net):
    assert 0 < default_budget("cpu") < 2**50
    with pytest.raises(ValueError, match="memory_budget"):
        certify(small_net, 3, memory_budget="lots")


def test_plan_splits_the_batch_then_the_rows():
    cost = CostModel(per_sample=100.0, per_row=10.0, kept_per_sample=0.0)
    F = FIXED_OVERHEAD
    assert plan_chunks("m", cost, 64, 8, F + 10**6, graph=False).batch == 64
    plan = plan_chunks("m", cost, 64, 8, F + 900, graph=False)  # 180 bytes per sample
    assert (plan.batch, plan.rows) == (5, 8)
    plan = plan_chunks("m", cost, 64, 8, F + 150, graph=False)
    assert (plan.batch, plan.rows) == (1, 5)
    with pytest.raises(MemoryBudgetError, match="'m' needs about .* single sample"):
        plan_chunks("m", cost, 64, 8, F + 100, graph=False)
    kept = CostModel(per_sample=1.0, per_row=1.0, kept_per_sample=1000.0)
    with pytest.raises(MemoryBudgetError, match="torch.no_grad"):
        plan_chunks("m", kept, 64, 8, F + 10**4, graph=True)
    assert plan_chunks("m", kept, 64, 8, F + 10**4, graph=False).batch == 64
    # a recorded graph is reserved first: the chunks share what is left
    assert plan_chunks("m", kept, 4, 8, F + 4000 + 27, graph=True).batch == 3


def costs(bnet, x, method: str, rows: int) -> CostModel:
    return method_cost(method)(bnet.sizes(x), rows)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("encoding", ["direct", "rate"])
def test_chunked_bounds_equal_unchunked_and_stay_sound(method, encoding, small_net, float64,
                                                     unit_inputs):
    # float64: a chunk of 1 or 2 samples rounds differently from the whole batch, which in
    # float32 may move a membrane bound across the threshold on some CPUs
    bnet = float64(certify(small_net, 4, encoding=encoding))
    x = unit_inputs(6, 4, 4, seed=1, dtype=torch.float64)
    y = torch.arange(6) % 5
    eps = torch.linspace(0.01, 0.2, 6, dtype=torch.float64)  # per-sample radii follow samples
    C = bnet.margin_spec(x, y)
    rows = 10  # the 5 margins, lower and upper bounds
    cost = costs(bnet, x, method, rows)
    F = FIXED_OVERHEAD
    with torch.no_grad():
        ref = bnet.spec_bounds(x, eps, C, method)
        assert bnet.plan(x, C, method).batch == 6  # the default budget: one chunk
        for budget, batch, per_pass in [
            (F + cost.per_sample + rows * cost.per_row, 1, rows),  # one sample per chunk
            (F + 2 * (cost.per_sample + rows * cost.per_row), 2, rows),
            (F + cost.per_sample + 2 * cost.per_row, 1, 2 if cost.per_row else rows),  # 2 rows
        ]:
            plan = bnet.plan(x, C, method, memory_budget=int(budget) + 1)
            assert (plan.batch, plan.rows) == (batch, per_pass)
            got = bnet.spec_bounds(x, eps, C, method, memory_budget=int(budget) + 1)
            if method == "alpha-crown":
                # Adam steps by the gradient's sign: ulp-level differences between batch
                # sizes change the path, never the soundness or the start (full CROWN)
                crown = bnet.spec_bounds(x, eps, C, "crown")
                assert (got[0] >= crown[0] - 1e-6).all() and (got[1] <= crown[1] + 1e-6).all()
                continue
            for r, g in zip(ref, got, strict=True):
                torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-6)
        noise = bnet.draw_noise(x) if encoding == "rate" else None
        lower = got[0]
        for _ in range(50):
            xp = (x + (torch.rand_like(x) * 2 - 1) * eps.view(-1, 1, 1)).clamp(0, 1)
            margins = torch.einsum("bmk,bk->bm", C, bnet(xp, noise))
            assert (margins >= lower).all()


def test_a_budget_too_small_raises_a_clear_error_and_no_grad_helps(small_net, unit_inputs):
    bnet = certify(small_net, 4)
    x = unit_inputs(64, 4, 4)
    with pytest.raises(MemoryBudgetError, match=r"method 'crown' needs about .* single sample"), \
            torch.no_grad():
        bnet.bounds(x, 0.05, method="crown", memory_budget=1000)
    kept = FIXED_OVERHEAD + 64 * costs(bnet, x, "crown-ibp", 10).kept_per_sample / 2  # half of it
    with pytest.raises(MemoryBudgetError, match="keep about .* for autograd"):
        bnet.bounds(x, 0.05, method="crown-ibp", memory_budget=int(kept))
    with torch.no_grad():
        bnet.bounds(x, 0.05, method="crown-ibp", memory_budget=int(kept))


def test_event_masks_are_split_with_their_samples(fc_net, float64):
    net = fc_net(8, 6, 3, beta=0.7, threshold=1.0)
    bnet = float64(certify(net, None, encoding="event"))
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(3, 4, 2, 4, generator=gen) > 0.5).double()
    mask = torch.rand(3, 4, 2, 4, generator=gen) > 0.7
    cost = costs(bnet, x, "crown-ibp", 6)
    budget = FIXED_OVERHEAD + int(cost.per_sample + 6 * cost.per_row) + 1
    with torch.no_grad():
        ref = bnet.bounds(x, mask, method="crown-ibp")
        assert bnet.plan(x, None, "crown-ibp", memory_budget=budget).batch == 1
        got = bnet.bounds(x, mask, method="crown-ibp", memory_budget=budget)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-6)
