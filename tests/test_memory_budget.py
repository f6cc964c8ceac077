"""Bit budgets (paper, Appendix B): item costs, generator size, the (c, l) solver, the command line."""

from __future__ import annotations

import math
import subprocess
import sys
from functools import partial

import pytest
import torch

from lossy_memory.memory import LosslessBuffer, RecollectionBuffer
from lossy_memory.memory.budget import (
    PARAMETER_BITS,
    BudgetProblem,
    capacity_for_budget,
    generator_parameters,
    code_bits,
    label_task_bits,
    lossless_bits,
    main,
    occupied_bits,
    recollection_bits,
    recollections_for_lossless,
    size_for_items,
    storage_dtype,
)
from lossy_memory.memory.packing import bits_per_variable
from lossy_memory.runtime import PROJECT_ROOT


@pytest.mark.parametrize("values, dtype", [(1, torch.uint8), (256, torch.uint8), (257, torch.int16), (2**15, torch.int16),
                                           (2**15 + 1, torch.int32), (2**31 + 1, torch.int64)])
def test_storage_dtype_is_the_smallest_that_fits(values, dtype):
    assert storage_dtype(values) == dtype


def test_item_costs():
    assert recollection_bits(168, 2, 10, 1) == 168 + 16
    assert recollection_bits(33, 32, 10, 1) == 165 + 16  # exactly c * ceil(log2 l): no padding to 21 bytes
    assert recollection_bits(38, 2, 10, 1) == 38 + 16 and code_bits(38, 2) == 38  # not 40
    assert code_bits(5, 1000) == 50 and code_bits(3, 65536) == 48 and code_bits(7, 3) == 14
    assert lossless_bits((1, 28, 28), 10, 300) == 6272 + 8 + 16
    assert label_task_bits(10, 1) == 16
    assert capacity_for_budget(184 * 1000 + 183, 184) == 1000
    with pytest.raises(ValueError, match="too small for one item"):
        capacity_for_budget(float("nan"), 184)


def test_capacity_leaves_room_for_the_last_partial_byte_of_the_codes():
    # items of 38 code bits + 16 side bits: n items occupy 54 n bits plus the fill of byte ceil(38 n / 8)
    assert [occupied_bits(n, 54, 38) for n in (1, 2, 3, 4)] == [56, 112, 168, 216]  # 40, 80, 120, 152 code bits
    assert capacity_for_budget(216, 54, packed_bits=38) == 4
    assert capacity_for_budget(215, 54, packed_bits=38) == 3  # floor(215 / 54) = 3 anyway
    assert capacity_for_budget(167, 54, packed_bits=38) == 2  # floor(167 / 54) = 3, but 3 items occupy 168 bits
    assert capacity_for_budget(111, 54, packed_bits=38) == 1  # floor(111 / 54) = 2, but 2 items occupy 112 bits
    assert capacity_for_budget(111, 54) == 2  # items of whole bytes
    with pytest.raises(ValueError, match=r"too small for one item of 54 bits \(56 bits with its last byte filled\)"):
        capacity_for_budget(55, 54, packed_bits=38)
    with pytest.raises(ValueError, match="packed_bits"):
        capacity_for_budget(1000, 54, packed_bits=55)


def test_lossless_equivalent_sizing():
    # 1000 MNIST images = 6,272,000 bits = 37,333 recollections of 168 bits (37,333.3)
    assert recollections_for_lossless(1000, (1, 28, 28), 168, 2) == 37_333
    # with labels and task ids on both sides the buffers hold exactly the same bits
    side = label_task_bits(10, 1)
    n = recollections_for_lossless(1000, (1, 28, 28), 168, 2, side)
    lossless = LosslessBuffer((1, 28, 28), capacity=1000)
    assert n == RecollectionBuffer(168, 2, budget_bits=1000 * lossless.item_bits).capacity == 1000 * 6288 // 184
    # 38 binary variables: 54 bits per item with label and task id (not 56), and the buffer agrees
    n = recollections_for_lossless(1000, (1, 28, 28), 38, 2, side)
    assert n == RecollectionBuffer(38, 2, budget_bits=1000 * lossless.item_bits).capacity == 1000 * 6288 // 54 == 116_444


@pytest.mark.parametrize("c, l, shape, hidden", [(8, 2, (1, 28, 28), None), (4, 4, (1, 28, 28), None), (3, 5, (3, 32, 32), None),
                                                 (168, 2, (1, 28, 28), None), (1, 2, (1, 5, 7), None), (62, 2, (1, 28, 28), 13)])
def test_generator_parameter_formula_matches_the_discrete_vae(c, l, shape, hidden):
    from lossy_memory.models import DiscreteVAE
    from lossy_memory.nets import CategoricalLatent, ConvDecoder, ConvEncoder

    vae = DiscreteVAE(CategoricalLatent(c, l), partial(ConvEncoder), partial(ConvDecoder), partial(torch.optim.Adam), image_shape=list(shape),
                      hidden=hidden)
    assert PARAMETER_BITS * generator_parameters(c, l, shape, hidden=hidden) == vae.storage_report()["parameter_bits"]


def test_sizing_for_a_number_of_recollections_fills_the_budget():
    """1,000 recollections in 10 MNIST images' bits (62,880): 62.88 bits each, 16 of them label and task id, so 46
    two-valued variables; 47 would need 63,000 bits. The buffer built at that size holds at least the 1,000."""
    budget = 10 * lossless_bits((1, 28, 28), 10, 5)
    chosen = size_for_items(1000, budget, (1, 28, 28), 10, 5)
    assert (chosen.c, chosen.l) == (46, 2)
    assert 1000 * recollection_bits(47, 2, 10, 5) > budget
    assert RecollectionBuffer(46, 2, budget_bits=budget, num_classes=10, num_tasks=5).capacity >= 1000
    # the total constraint: the generator's parameters (8 filters) come out of the budget, so fewer bits per item
    total = size_for_items(1000, 500 * lossless_bits((1, 28, 28), 10, 5), (1, 28, 28), 10, 5, count_generator=True, hidden=8)
    assert 1000 * total.stored_bits + total.parameter_bits <= 500 * lossless_bits((1, 28, 28), 10, 5)
    assert total.code_bits < size_for_items(1000, 500 * lossless_bits((1, 28, 28), 10, 5), (1, 28, 28), 10, 5).code_bits
    with pytest.raises(ValueError, match="lower memory.recollections"):
        size_for_items(10_000, budget, (1, 28, 28), 10, 5)  # 6.3 bits each: not even the label and task id fit
    with pytest.raises(ValueError, match="integer >= 1"):
        size_for_items(0, budget, (1, 28, 28), 10, 5)


def test_sizing_leaves_the_global_rng_alone():
    """Sizing runs while a seeded run is being set up: letting the solver pick c and l must draw the same weights and
    noise as spelling them out (it once built a small encoder there, and the same config gave another run)."""
    from lossy_memory.memory import budget as budget_module

    budget_module._feature_cells.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    size_for_items(1000, 62_880, (1, 28, 28), 10, 5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("budget, c", [(10, 46), (50, 298)])
def test_a_recollection_memory_is_sized_from_its_budget_unless_c_and_l_are_given(tmp_path, budget, c):
    from conftest import compose_config

    cfg = compose_config(["+experiment=mnist_split_lifelong", "memory=recollection",
                          f"memory.lossless_equivalent={budget}", "memory.recollections=1000"], tmp_path)
    assert (cfg.memory.generator.latent.c, cfg.memory.generator.latent.l) == (c, 2)
    given = compose_config(["+experiment=mnist_split_lifelong", "memory=recollection", f"memory.lossless_equivalent={budget}",
                            "memory.generator.latent.c=38", "memory.generator.latent.l=4"], tmp_path)
    assert (given.memory.generator.latent.c, given.memory.generator.latent.l) == (38, 4)


def test_168_bits_per_example_stores_168_binary_variables():
    """rho=1, 168 bits: every b dividing 168 reaches C = 168 with l = 2^b (c=84 at l=4 costs exactly the same
    generator: c*l/4 = 84 filters and c*l = 336 latent units either way); the tie goes to the smaller l."""
    problem = BudgetProblem(168, rho=1)
    chosen = problem.solve()
    assert (chosen.c, chosen.l, chosen.code_bits, chosen.capacity) == (168, 2, 168, 168)
    rows = {(row.c, row.l): row for row in problem.candidates()}
    assert rows[(84, 4)].capacity == 168 and rows[(84, 4)].parameter_bits == chosen.parameter_bits
    assert rows[(56, 8)].capacity == 168 and rows[(56, 8)].parameter_bits > chosen.parameter_bits
    assert rows[(33, 32)].capacity == 165  # 5 does not divide 168: 3 bits lost
    assert problem.candidates()[0] == chosen


@pytest.mark.parametrize("bits, rho, expected", [(168, 0.5, (336, 2)), (16.8, 0.1, (168, 2)), (12, 1, (12, 2)), (16, 1, (16, 2)),
                                                 (40, 1, (40, 2)), (38, 1, (38, 2)), (19, 0.5, (38, 2)), (7, 1, (7, 2)),
                                                 (12.9, 1, (12, 2))])
def test_incremental_solutions_by_hand(bits, rho, expected):
    """Eq. 5 exactly, rho * c * ceil(log2 l) <= gamma / N, whole bytes or not: 12 bits per example store 12 binary
    variables (c=6 of l=4 ties: capacity 12 and the very same generator, c*l = 24; the tie goes to the smaller l)."""
    problem = BudgetProblem(bits, rho=rho)
    chosen = problem.solve()
    assert (chosen.c, chosen.l) == expected
    assert chosen.code_bits == chosen.stored_bits == chosen.c * bits_per_variable(chosen.l)
    assert rho * chosen.stored_bits <= bits + 1e-9 < rho * (chosen.stored_bits + 1)


def test_twelve_bits_per_example_ties_two_binary_variables_with_one_four_valued():
    rows = {(row.c, row.l): row for row in BudgetProblem(12, rho=1).candidates()}
    assert rows[(12, 2)].capacity == rows[(6, 4)].capacity == 12
    assert rows[(12, 2)].parameter_bits == rows[(6, 4)].parameter_bits
    assert rows[(4, 8)].capacity == rows[(3, 16)].capacity == 12 and rows[(4, 8)].parameter_bits > rows[(12, 2)].parameter_bits


def test_less_than_a_bit_per_stored_example_fits_nothing():
    with pytest.raises(ValueError, match="no \\(c, l\\) fits"):
        BudgetProblem(0.9, rho=1).solve()
    with pytest.raises(ValueError, match="no \\(c, l\\) fits"):
        BudgetProblem(16.5, rho=1, num_classes=10, num_tasks=1).solve()  # 16 of the 16.5 bits go to label and task id
    assert BudgetProblem(17, rho=1, num_classes=10, num_tasks=1).solve().c == 1


def test_labels_can_be_counted_in_the_incremental_budget():
    chosen = BudgetProblem(168, rho=1, num_classes=10, num_tasks=1).solve()  # 16 bits of label and task id
    assert (chosen.c, chosen.l, chosen.stored_bits) == (152, 2, 168)


def brute_force(problem: BudgetProblem):
    best = None
    for l in range(2, problem.l_max + 1):
        for c in range(1, problem.max_c_incremental(l) + 1):
            if problem.total_bits is None or problem.fits_total(c, l):
                row = problem.candidate(c, l)
                best = row if best is None or row.key() < best.key() else best
    return best


@pytest.mark.parametrize("total", [2e6, 1e7, 5e7])
def test_total_constraint_counts_the_generator_and_matches_brute_force(total):
    problem = BudgetProblem(168, rho=1, total_bits=total, l_max=64)
    chosen = problem.solve()
    assert chosen == brute_force(problem)
    n = total / 168
    assert n * chosen.stored_bits + chosen.parameter_bits <= total  # eq. 6
    left = total - chosen.parameter_bits  # what the buffer really holds in the bits the generator leaves
    assert occupied_bits(chosen.items, chosen.stored_bits, chosen.code_bits) <= left
    assert occupied_bits(chosen.items + 1, chosen.stored_bits, chosen.code_bits) > left
    assert chosen.items >= math.floor(n)


def test_total_constraint_binds_below_the_incremental_answer():
    """60,000 examples of 168 bits: 60,000 items of 59 bits take 3.54M bits and the generator for c=59, l=2 6.27M
    (9.81M in all); c=60 takes 3.6M + 6.64M (its generator has 30 hidden filters, not 29) = 10.24M > 10.08M.
    (Items padded to whole bytes would have stopped at c=58: 60,000 items of 64 bits + 6.21M.)"""
    problem = BudgetProblem(168, rho=1, total_bits=1.008e7)
    chosen = problem.solve()
    assert (chosen.c, chosen.l, chosen.stored_bits) == (59, 2, 59)
    assert problem.fits_total(59, 2) and not problem.fits_total(60, 2)
    assert 60_000 * 59 + chosen.parameter_bits == 9_812_576


def test_infeasible_and_invalid_problems_raise():
    with pytest.raises(ValueError, match="no \\(c, l\\) fits"):
        BudgetProblem(168, total_bits=200).solve()
    with pytest.raises(ValueError, match="rho"):
        BudgetProblem(168, rho=0)
    with pytest.raises(ValueError, match="both num_classes and num_tasks"):
        BudgetProblem(168, num_classes=10)


def test_command_line_prints_the_candidate_table(capsys):
    main(["--bits-per-example", "168", "--rho", "1", "--lossless-images", "1000"])
    out = capsys.readouterr().out
    assert "capacity C" in out and "param bits" in out and "items that fit" in out
    assert any(line.split()[:3] == ["*", "168", "2"] for line in out.splitlines())
    assert "1,000 lossless images (6,272,000 bits) = 37,333 recollections of c=168, l=2" in out
    with pytest.raises(SystemExit):
        main(["--bits-per-example", "168", "--rho", "2"])
    assert "rho" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "lossy_memory.budget", "--bits-per-example", "168", "--rho", "1",
                             "--total-bits", "1e8", "--image-shape", "1", "28", "28"],
                            capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT, check=True)
    chosen = BudgetProblem(168, total_bits=1e8).solve()
    assert f"chosen: c={chosen.c}, l={chosen.l}" in result.stdout
    assert f"{chosen.items:,}" in result.stdout and math.isclose(chosen.capacity, chosen.c * math.log2(chosen.l))
    assert bits_per_variable(chosen.l) * chosen.c == chosen.code_bits


def test_the_cli_flags_a_generator_whose_parameters_dwarf_the_codes(capsys):
    main(["--bits-per-example", "6272"])  # incremental: the solver goes to c=6272 codes, the parameters uncounted
    out = capsys.readouterr().out
    chosen = BudgetProblem(6272).solve()
    assert f"this generator has {chosen.parameter_bits // 32:,} parameters" in out and "Give --total-bits" in out
    main(["--bits-per-example", "6272", "--total-bits", "1e9"])  # counted: no note
    assert "this generator has" not in capsys.readouterr().out
