"""Continual-learning strategies and their memory: GEM's and A-GEM's projections, DER++'s stored logits, iCaRL's
herding and exemplar sets, replay from lossless images or recollections at equal bits, and bad input."""

from functools import partial

import pytest
import torch

from lossy_memory.memory.budget import lossless_bits
from lossy_memory.models import DiscreteVAE
from lossy_memory.nets import MLP, CategoricalLatent, ConvDecoder, ConvEncoder
from lossy_memory.memory.coresets import herding
from lossy_memory.models.gradient_matching import condense
from lossy_memory.memory import EpisodicMemory
from lossy_memory.strategies import (
    ContinualStep,
    AGEM,
    DERPP,
    GEM,
    CondensedReplay,
    ExperienceReplay,
    ICaRL,
    OnlineFineTuning,
    StrategyContext,
    agem_project,
    project_to_cone,
)

SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    torch.manual_seed(0)


def tiny_vae(c: int = 8, hidden: int = 4, **kwargs) -> DiscreteVAE:
    return DiscreteVAE(CategoricalLatent(c, 2), partial(ConvEncoder), partial(ConvDecoder), partial(torch.optim.Adam, lr=1e-3),
                       image_shape=SHAPE, hidden=hidden, **kwargs)


def stream(num_tasks: int = 3, per_task: int = 40, classes_per_task: int = 2):
    """Synthetic tasks: class k lights row k of an 8x8 image over noise; task t holds classes t*k .. (t+1)*k - 1."""
    tasks = []
    for t in range(num_tasks):
        y = t * classes_per_task + torch.arange(per_task) % classes_per_task
        x = torch.rand(per_task, *SHAPE) * 0.3
        x[torch.arange(per_task), 0, y] += 0.7
        tasks.append((x, y))
    return tasks


def context(strategy, memory=None, num_tasks=3, classes_per_task=2, lr=0.1, task_train_set=None):
    """The strategy prepared as the learner prepares it (``ContinualStep.prepare``: memory built, then setup)."""
    num_classes = num_tasks * classes_per_task
    net = MLP(SHAPE, num_classes, hidden=[16])
    classes = [tuple(range(t * classes_per_task, (t + 1) * classes_per_task)) for t in range(num_tasks)]
    step = ContinualStep(strategy, memory, generator_steps=0)
    step.prepare(net, SHAPE, num_classes, classes, task_train_set)
    strategy.ctx.optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    return strategy.ctx


def run(strategy, tasks, batch=10, upto=None):
    for t, (x, y) in enumerate(tasks[:upto]):
        strategy.before_task(t)
        for i in range(0, len(x), batch):
            strategy.observe({"x": x[i:i + batch], "y": y[i:i + batch], "task": torch.full((len(x[i:i + batch]),), t)})
        strategy.after_task(t)


class TaskSet:
    """What ``task_train_set`` returns: uint8 images and labels of one task."""

    def __init__(self, x, y):
        self.images, self.labels = (x * 255).round().to(torch.uint8), y


# -- GEM ---------------------------------------------------------------------------------------------------------
def kkt_check(g, G, x, margin):
    v = torch.linalg.lstsq(G.T, x - g).solution  # x = g + G^T v
    assert torch.allclose(G.T @ v + g, x, atol=1e-6)
    assert (v >= margin - 1e-6).all()


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_gem_projection_agrees_with_every_memory_gradient(margin):
    g = torch.randn(50, dtype=torch.float64)
    G = torch.randn(5, 50, dtype=torch.float64)
    G[:3] -= 2 * g  # the first three conflict with g
    assert (G @ g < 0).sum() >= 3
    x = project_to_cone(g, G, margin=margin, eps=1e-8)
    assert (G @ x >= -1e-6).all()
    kkt_check(g, G, x, margin)
    if margin == 0:  # the closest such vector: no constraint left slack while its multiplier is positive
        v = torch.linalg.lstsq(G.T, x - g).solution
        assert torch.allclose(v * (G @ x), torch.zeros(5, dtype=torch.float64), atol=1e-5)


def test_gem_projection_survives_a_singular_gram_matrix():
    g = torch.randn(4, dtype=torch.float64)
    row = -g + 0.1 * torch.randn(4, dtype=torch.float64)
    G = torch.stack([row, row, 2 * row, -g, -g, -g])  # 6 rows in 4 dimensions, repeated: G G^T is singular
    x = project_to_cone(g, G, margin=0.0, eps=1e-3)
    assert (G @ x >= -1e-2).all()


def test_gem_update_has_non_negative_dot_product_with_every_memory_gradient():
    tasks = stream()
    gem = GEM(memory_strength=0.0, eps=1e-8)
    lr = 0.1
    ctx = context(gem, EpisodicMemory("lossless", lossless_equivalent=60, layout="per_task"), lr=lr)
    run(gem, tasks, upto=2)  # memories of tasks 0 and 1
    gem.before_task(2)
    x, y = tasks[2]
    # make the current batch conflict with the memories: task 2's images labelled as task 0's classes
    batch = {"x": x[:10], "y": y[:10] - 4, "task": torch.full((10,), 2)}
    memories = gem.memory_gradients(torch.device("cpu"))
    assert memories.shape[0] == 2
    before = torch.cat([p.detach().flatten().clone() for p in ctx.net.parameters()])
    gem.observe(batch)
    after = torch.cat([p.detach().flatten() for p in ctx.net.parameters()])
    applied = (before - after) / lr
    assert gem.projections >= 1
    assert (memories @ applied >= -1e-4).all(), memories @ applied


# -- A-GEM ---------------------------------------------------------------------------------------------------------
def test_agem_projection_formula():
    g, ref = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    dot = float(g @ ref)  # -1.5
    expected = g - dot / float(ref @ ref) * ref
    projected = agem_project(g, ref)
    assert torch.allclose(projected, expected)
    assert float(projected @ ref) == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(agem_project(g, -ref), g)  # agreeing gradients pass unchanged


def test_agem_trains_with_a_recollection_memory():
    vae = tiny_vae()
    agem = AGEM(sample_size=16)
    ctx = context(agem, EpisodicMemory("recollection", lossless_equivalent=2, generator=vae))
    run(agem, stream(), upto=2)
    memory = ctx.memory
    assert len(memory) > 2  # many recollections in the bits of 2 images
    assert memory.bits_used() == len(memory) * (8 + 16) <= memory.budget_bits


# -- memory --------------------------------------------------------------------------------------------------------
def test_equal_bits_recollections_outnumber_lossless_images():
    lossless = EpisodicMemory("lossless", lossless_equivalent=10)
    lossless.build(SHAPE, 10, 5)
    recollections = EpisodicMemory("recollection", lossless_equivalent=10, generator=tiny_vae(c=8))
    recollections.build(SHAPE, 10, 5)
    budget = 10 * lossless_bits(SHAPE, 10, 5)
    assert lossless.budget_bits == recollections.budget_bits == budget
    assert lossless.capacity == 10
    assert recollections.capacity == budget // (8 + 16)


def test_budget_below_one_item_is_a_clear_error():
    with pytest.raises(ValueError, match="holds no lossless item"):
        EpisodicMemory("lossless", budget_bits=100).build(SHAPE, 10, 5)
    with pytest.raises(ValueError, match="per task"):
        EpisodicMemory("lossless", lossless_equivalent=2, layout="per_task").build(SHAPE, 10, 5)
    with pytest.raises(ValueError, match="lossless_equivalent .* or memory.budget_bits: both are null"):
        EpisodicMemory("lossless")
    with pytest.raises(ValueError, match="generator"):
        EpisodicMemory("recollection", lossless_equivalent=1)


def test_add_returns_the_slots_it_wrote():
    memory = EpisodicMemory("lossless", lossless_equivalent=8)
    memory.build(SHAPE, 10, 1)
    store = memory.stores[0]
    landed = 0
    for step in range(6):
        x = torch.rand(5, *SHAPE)
        (written,) = memory.add(x, torch.full((5,), step), 0)
        stored = store.stored[0]
        assert torch.equal(stored[written.slots], (x[written.sources] * 255).round().to(torch.uint8))
        assert (store.stored[1][written.slots] == step).all()
        landed += len(written.slots)
    assert store.num_seen == 30 and len(store) == 8
    assert 8 < landed < 30  # the fill phase writes every item, the reservoir only some


def test_per_class_layout_keeps_a_reservoir_per_class_and_says_where_items_went():
    memory = EpisodicMemory("lossless", lossless_equivalent=6, layout="per_class")
    memory.build(SHAPE, 3, 1)
    x, y = torch.rand(12, *SHAPE), torch.arange(12) % 3
    writes = memory.add(x, y, 0)
    assert sorted(w.store for w in writes) == [0, 1, 2]
    for w in writes:
        assert (y[w.sources] == w.store).all()
        assert (memory.stores[w.store].stored[1][w.slots] == w.store).all()
    assert all(s.capacity == 2 for s in memory.stores.values())  # a third of the budget each
    assert memory.bits_used() <= memory.budget_bits


# -- DER++ --------------------------------------------------------------------------------------------------------
def test_derpp_keeps_the_logits_each_item_was_stored_with():
    derpp = DERPP()
    ctx = context(derpp, EpisodicMemory("lossless", lossless_equivalent=100))
    x, y = stream()[0]
    derpp.before_task(0)
    with torch.no_grad():
        expected = ctx.net(x[:10])
    derpp.observe({"x": x[:10], "y": y[:10], "task": torch.zeros(10, dtype=torch.long)})
    drawn = ctx.memory.sample(20)
    assert torch.allclose(drawn.attributes["logits"], expected[drawn.slots])  # item k sits in slot k while filling
    derpp.observe({"x": x[10:20], "y": y[10:20], "task": torch.zeros(10, dtype=torch.long)})  # replays now
    assert len(ctx.memory) == 20


@pytest.mark.parametrize(("logit_dtype", "bits"), [("float32", 32), ("float16", 16)])
def test_derpp_memory_pays_for_its_logits_within_the_budget(logit_dtype, bits):
    """Equal bits: the logits kept per item come out of the same budget (split MNIST: 10 logits of 32 bits per item)."""
    derpp = DERPP(logit_dtype=logit_dtype)
    memory = EpisodicMemory("lossless", lossless_equivalent=20)
    context(derpp, memory)  # builds the memory with the strategy's per-item attributes
    item = 8 * 64 + 8 + 8 + 6 * bits  # 8x8 image, label, task id, 6 logits
    assert memory.stores[0].item_bits == item
    assert memory.capacity == int(memory.budget_bits // item) < 20
    run(derpp, stream())
    assert len(memory) == memory.capacity and memory.bits_used() <= memory.budget_bits
    assert memory.stores[0].sample(3).attributes["logits"].dtype == getattr(torch, logit_dtype)
    with pytest.raises(ValueError, match="logit_dtype"):
        DERPP(logit_dtype="int8")


# -- iCaRL ---------------------------------------------------------------------------------------------------------
def test_icarl_builds_class_exemplar_sets_within_the_budget_and_predicts_by_nearest_mean():
    tasks = stream()
    icarl = ICaRL()
    ctx = context(icarl, EpisodicMemory("lossless", lossless_equivalent=12), task_train_set=lambda t: TaskSet(*tasks[t]))
    run(icarl, tasks, upto=1)
    assert sorted(ctx.memory.stores) == [0, 1] and all(len(s) == 6 for s in ctx.memory.stores.values())  # 12 / 2 classes
    run_rest = tasks[:2]
    icarl.before_task(1)
    x, y = run_rest[1]
    icarl.observe({"x": x[:10], "y": y[:10], "task": torch.ones(10, dtype=torch.long)})
    icarl.after_task(1)
    assert sorted(ctx.memory.stores) == [0, 1, 2, 3] and all(len(s) == 3 for s in ctx.memory.stores.values())  # 12 / 4
    assert ctx.memory.bits_used() <= ctx.memory.budget_bits
    logits = icarl.predict(x[:5])
    assert torch.isinf(logits[:, 4:]).all() and torch.isfinite(logits[:, :4]).all()  # no exemplars of classes 4, 5 yet


def test_icarl_refuses_overlapping_classes():
    icarl = ICaRL()
    net = MLP(SHAPE, 4, hidden=[8])
    memory = EpisodicMemory("lossless", lossless_equivalent=4)
    memory.build(SHAPE, 4, 2)
    ctx = StrategyContext(net, torch.optim.SGD(net.parameters(), lr=0.1), 4, [(0, 1), (1, 2)], memory, task_train_set=lambda t: None)
    with pytest.raises(ValueError, match="disjoint classes.*class 1 is in task 0 and task 1"):
        icarl.setup(ctx)


def small_condenser(**settings):
    return partial(condense, net=partial(MLP, hidden=[16]), iterations=3, outer_loop=2, inner_loop=1, batch_real=8, **settings)


def test_condensed_replay_keeps_m_condensed_images_per_class_from_each_finished_task():
    tasks = stream()
    strategy = CondensedReplay(selection="condense", condenser=small_condenser())
    ctx = context(strategy, EpisodicMemory("lossless", lossless_equivalent=13), task_train_set=lambda t: TaskSet(*tasks[t]))
    assert strategy.images_per_class == 2  # 13 images' bits over the stream's 6 classes
    run(strategy, tasks, upto=1)  # incoming examples are not stored: only task 0's end writes the memory
    assert sorted(ctx.memory.stores) == [0, 1] and all(len(s) == 2 for s in ctx.memory.stores.values())
    x, y, t = ctx.memory.contents()
    assert sorted(y.tolist()) == [0, 0, 1, 1] and (t == 0).all()
    real = TaskSet(*tasks[0]).images.float() / 255
    assert not any(((real - image).abs().flatten(1).amax(1) < 1e-6).any() for image in x)  # synthesised, not real examples
    run(strategy, tasks)
    assert sorted(ctx.memory.stores) == list(range(6)) and len(ctx.memory) == 12
    assert ctx.memory.bits_used() <= ctx.memory.budget_bits


def test_condense_keeps_the_original_labels_and_moves_the_images():
    x, y = stream(num_tasks=2)[1]  # classes 2 and 3
    images = TaskSet(x, y).images
    synthetic = condense(images, y, partial(MLP, hidden=[16]), images_per_class=3, iterations=2, outer_loop=2, inner_loop=1,
                         batch_real=8, mean=(0.0,), std=(1.0,))
    assert synthetic.images.shape == (6, *SHAPE) and synthetic.labels.tolist() == [2, 2, 2, 3, 3, 3]
    assert not any(((images.float() / 255 - image).abs().flatten(1).amax(1) < 1e-6).any() for image in synthetic.images)


def test_herding_selection_stores_the_herded_real_examples():
    tasks = stream()
    strategy = CondensedReplay(selection="herding")
    ctx = context(strategy, EpisodicMemory("lossless", lossless_equivalent=12), task_train_set=lambda t: TaskSet(*tasks[t]))
    run(strategy, tasks, upto=1)
    images = TaskSet(*tasks[0]).images.float() / 255
    for c in (0, 1):
        members = images[tasks[0][1] == c]
        expected = members[herding(members.flatten(1), 2)]
        stored, labels, _ = ctx.memory.contents(key=c)
        assert torch.allclose(stored, expected) and (labels == c).all()


@pytest.mark.parametrize(("kwargs", "memory", "message"), [
    ({"selection": "kmeans"}, None, "strategy.selection"),
    ({"selection": "condense"}, None, "needs strategy.condenser"),
    ({"selection": "random"}, EpisodicMemory("lossless", lossless_equivalent=5), r"per class \(6 classes\).*holds no lossless item.*at least 6"),
    ({"selection": "random"}, EpisodicMemory("recollection", lossless_equivalent=5, generator=tiny_vae()), "use memory=lossless"),
])
def test_condensed_replay_bad_input_is_a_clear_error(kwargs, memory, message):
    with pytest.raises(ValueError, match=message):
        context(CondensedReplay(**kwargs), memory, task_train_set=lambda t: None)


# -- replay and the common interface ----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [OnlineFineTuning, ExperienceReplay, GEM, AGEM, DERPP, ICaRL, CondensedReplay])
def test_fewer_than_one_update_per_batch_is_rejected(strategy):
    with pytest.raises(ValueError, match="steps"):
        strategy(steps=0)


def test_replay_draws_every_batch_before_updating_and_mixes_recollections():
    vae = tiny_vae()
    replay = ExperienceReplay(steps=3, replay_size=4)
    ctx = context(replay, EpisodicMemory("recollection", lossless_equivalent=4, generator=vae))
    tasks = stream()
    run(replay, tasks, upto=1)
    assert len(ctx.memory) == 40  # all of task 0's codes fit
    batches = ctx.memory.replay_batches({"x": tasks[1][0][:10], "y": tasks[1][1][:10], "task": torch.ones(10, dtype=torch.long)},
                                        replay.steps, replay.replay_size)
    assert len(batches) == 3 and all(len(b["x"]) == 14 and b["replayed"].sum() == 4 for b in batches)
    assert all((b["y"][10:] < 2).all() for b in batches)  # replayed labels are task 0's


def test_reconstruct_incoming_trains_the_classifier_on_recollections_of_the_incoming_batch():
    vae = tiny_vae()
    replay = ExperienceReplay()
    ctx = context(replay, EpisodicMemory("recollection", lossless_equivalent=4, generator=vae, reconstruct_incoming=True))
    seen = []
    ctx.net.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    x, y = stream()[0]
    replay.before_task(0)
    replay.observe({"x": x[:10], "y": y[:10], "task": torch.zeros(10, dtype=torch.long)})
    with torch.no_grad():
        expected = vae.eval().reconstruct(x[:10])
    assert torch.allclose(seen[0][:10], expected) and not torch.allclose(seen[0][:10], x[:10])
    assert len(ctx.memory) == 10  # what is stored are the real images' codes, as without the option
    with pytest.raises(ValueError, match="reconstruct_incoming.*has none"):
        EpisodicMemory("lossless", lossless_equivalent=4, reconstruct_incoming=True)


def test_memory_free_strategy_refuses_a_memory_and_memory_strategies_need_one():
    with pytest.raises(ValueError, match="keeps a memory"):
        context(ExperienceReplay())
    memory = EpisodicMemory("lossless", lossless_equivalent=4)
    with pytest.raises(ValueError, match="keeps no memory"):
        OnlineFineTuning().setup(StrategyContext(MLP(SHAPE, 6, hidden=[4]), None, 6, [(0, 1)], memory))
    assert ContinualStep(OnlineFineTuning(), memory).memory is None  # the learner drops a memory nothing uses


def test_replay_reduces_forgetting_against_fine_tuning():
    tasks = stream(num_tasks=2, per_task=200)
    results = {}
    for name, strategy, memory in (("finetune", OnlineFineTuning(), None),
                                   ("replay", ExperienceReplay(), EpisodicMemory("lossless", lossless_equivalent=40))):
        torch.manual_seed(0)
        ctx = context(strategy, memory, num_tasks=2)
        run(strategy, tasks)
        x, y = tasks[0]
        results[name] = float((ctx.net(x).argmax(1) == y).float().mean())
    assert results["replay"] > results["finetune"] + 0.2, results


def test_derpp_with_a_mixed_memory_keeps_logits_for_both_parts():
    derpp = DERPP()
    ctx = context(derpp, EpisodicMemory("mixed", lossless_equivalent=3, lossy_fraction=0.5, generator=tiny_vae()))
    store = ctx.memory.stores[0]
    assert store.lossy.capacity > store.lossless.capacity >= 1  # half the bits buy many more codes than images
    run(derpp, stream(), upto=2)
    drawn = ctx.memory.sample(60)
    assert drawn.attributes["logits"].shape == (60, 6) and (drawn.slots < store.capacity).all()
    lossless = drawn.slots >= store.lossy.capacity
    assert lossless.any() and (drawn.attributes["logits"][lossless].abs().sum(1) > 0).all()  # the lossless slots got their logits too
    assert ctx.memory.bits_used() <= ctx.memory.budget_bits


def test_anchoring_keeps_stored_codes_decoding_as_at_the_task_boundary():
    tasks = stream(num_tasks=2, per_task=100)
    drift = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        vae = tiny_vae(hidden=16)
        memory = EpisodicMemory("recollection", lossless_equivalent=4, generator=vae, anchor_weight=weight)
        memory.build(SHAPE, 4, 2)
        optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
        for t, (x, y) in enumerate(tasks):
            for i in range(0, len(x), 10):
                loss = memory.generator_loss(x[i:i + 10])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if t == 0:
                    memory.add(x[i:i + 10], y[i:i + 10], t)
            if t == 0:
                codes = memory.stores[0].stored_codes()
                with torch.no_grad():
                    at_boundary = vae.decode(codes)
                memory.end_task(0)
                assert (memory.online.snapshot is not None) == (weight > 0)
        with torch.no_grad():
            drift[weight] = float((vae.decode(codes) - at_boundary).abs().mean())
    assert at_boundary.mean() > 0.05  # not the all-black image
    assert drift[1.0] < 0.25 * drift[0.0], drift


def test_recollections_made_without_host_reads_equal_the_masked_ones():
    """The accelerator path (decode with both, pick per item) gives the recollections, anchor and gradients of the
    host path (split the codes by task), with old and new codes mixed and with none old."""
    torch.manual_seed(0)
    memory = EpisodicMemory("recollection", lossless_equivalent=4, generator=tiny_vae(), anchor_weight=1.0)
    memory.build(SHAPE, 4, 3)
    memory.end_task(0)
    with torch.no_grad():
        for p in memory.generator.parameters():
            p.add_(0.1 * torch.randn_like(p))  # the generator drifts from its snapshot
    codes = torch.randint(2, (7, 8))
    for tasks in (torch.tensor([0, 1, 0, 2, 1, 0, 2]), torch.tensor([1, 2, 1, 1, 2, 2, 1])):
        outcomes = []
        for sync_free in (False, True):
            memory.generator.zero_grad()
            images, anchor = memory.online.recollections(codes, tasks, torch.float32, sync_free=sync_free)
            if anchor is not None:
                anchor.backward()
            grads = [None if p.grad is None else p.grad.clone() for p in memory.generator.parameters()]
            outcomes.append((images, 0.0 if anchor is None else float(anchor), grads))
        (masked, masked_anchor, masked_grads), (picked, picked_anchor, picked_grads) = outcomes
        assert torch.allclose(masked, picked, atol=1e-6)
        assert picked_anchor == pytest.approx(masked_anchor, rel=1e-5, abs=1e-7)
        assert (masked_anchor > 0) == bool((tasks == 0).any())
        for a, b in zip(masked_grads, picked_grads):
            assert (a is None and (b is None or not b.any())) or torch.allclose(a, b, atol=1e-6)


def test_the_generators_online_loss_uses_its_reconstruction_loss():
    """generator_loss with an empty memory is the DiscreteVAE's loss on x: same value under the same Gumbel noise."""
    x = torch.rand(6, *SHAPE)
    for name in ("l1", "mse"):
        vae = tiny_vae(reconstruction_loss=name)
        memory = EpisodicMemory("recollection", lossless_equivalent=4, generator=vae)
        memory.build(SHAPE, 4, 2)
        torch.manual_seed(3)
        online = memory.generator_loss(x)
        torch.manual_seed(3)
        x_hat, kl = vae(x)
        direct = vae.reconstruction_error(x_hat, x).mean() + vae.kl_weight * kl.mean()
        assert torch.allclose(online, direct), name
        l1 = (x_hat - x).abs().flatten(1).sum(1).mean() + vae.kl_weight * kl.mean()
        assert torch.allclose(online, l1) == (name == "l1"), name  # with mse, the online loss is not the L1 one


def test_memory_state_round_trips_with_its_stores_and_snapshot():
    vae = tiny_vae()
    memory = EpisodicMemory("recollection", lossless_equivalent=2, generator=vae, anchor_weight=1.0)
    memory.build(SHAPE, 6, 3)
    x, y = stream()[0]
    memory.add(x, y, 0)
    memory.end_task(0)
    state = memory.state_dict()
    restored = EpisodicMemory("recollection", lossless_equivalent=2, generator=tiny_vae(), anchor_weight=1.0)
    restored.build(SHAPE, 6, 3)
    restored.load_state_dict(state)
    assert torch.equal(restored.stores[0].stored_codes(), memory.stores[0].stored_codes())
    assert torch.equal(restored.sample(5).x, memory.sample(5).x)  # same generator weights, same draws
    codes = memory.stores[0].stored_codes()
    assert torch.equal(restored.online.snapshot.decode(codes), memory.online.snapshot.decode(codes))
