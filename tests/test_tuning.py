"""Multi-task training of the shared encoder on the tiny random BERT: it learns, it is deterministic, its binary path
is exactly the stored codes, its batches stay under the token budget, its task sampling follows the temperature."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from encoder.spec import FeatureSpec
from encoder.typed_config import ConfigError
from encoder.batching import padded_batches as micro_batches
from encoder.features import FeatureSettings
from encoder.forward import pad_ids as pad
from heads.tasks import LabelError, TaskConfig
from tuning.config import MultiTaskConfig
from tuning.data import TaskData
from tuning.loop import TuningRun, train_shared_encoder
from tuning.losses import task_loss, task_metric
from tuning.network import SharedEncoder, load_trunk
from tuning.sampling import TaskSampler


def spec_features(layers, num_layers, layer_combine, pooling, normalize):
    return FeatureSettings(layers=layers if isinstance(layers, str) else tuple(layers), layer_combine=layer_combine,
                           pooling=pooling, normalize=normalize).resolve(num_layers)

GOOD = ["good movie", "very good movie", "it was good", "good and good", "a good movie", "you good"]
BAD = ["bad movie", "very bad movie", "it was bad", "bad and bad", "a bad movie", "you bad"]
TOPIC_A = ["the stock market fell today", "stock market", "the market fell", "market fell today"]
TOPIC_B = ["a man is playing guitar", "someone strumming guitar", "man playing", "guitar playing man"]


def toy_tasks() -> list[TaskData]:
    sent = TaskConfig(name="sentiment", kind="binary", columns=("label",))
    topic = TaskConfig(name="topic", kind="multiclass", columns=("label",), labels=("market", "music", "other"))
    tags = TaskConfig(name="tags", kind="multilabel", columns=("is_good", "is_music"))
    s_texts = GOOD + BAD
    s_y = np.array([1] * len(GOOD) + [0] * len(BAD))
    t_texts = TOPIC_A + TOPIC_B + ["hello world", "i was in it"]
    t_y = np.array([0] * len(TOPIC_A) + [1] * len(TOPIC_B) + [2, 2])
    g_texts = GOOD[:3] + TOPIC_B[:3]
    g_y = np.array([[1, 0]] * 3 + [[-1, 1]] * 3)            # -1: label unknown on that row
    return [TaskData(sent, 2, s_texts, s_y, s_texts[:4] + s_texts[-4:], np.r_[s_y[:4], s_y[-4:]]),
            TaskData(topic, 3, t_texts, t_y, t_texts, t_y),
            TaskData(tags, 2, g_texts, g_y, g_texts, g_y)]


def cfg(**kw) -> MultiTaskConfig:
    base = dict(max_steps=30, eval_every=10, patience=5, texts_per_step=8, token_budget=32, max_length=16,
                lr=1e-3, head_lr=1e-2, warmup_steps=2, keep_general=0.0, seed=3)
    return MultiTaskConfig(**(base | kw))


def train(tiny_model_dir, **kw):
    torch.set_num_threads(1)
    model, tok = load_trunk(str(tiny_model_dir))
    feats = spec_features("all", model.config.num_hidden_layers, "mean", "mean", True)
    base = load_trunk(str(tiny_model_dir))[0] if kw.get("keep_general") else None
    return train_shared_encoder(model, tok, feats, toy_tasks(), cfg(**kw), base=base)


def test_training_lowers_the_loss_and_fits_a_separable_set(tiny_model_dir):
    torch.set_num_threads(1)
    model, tok = load_trunk(str(tiny_model_dir))
    untrained = TuningRun(model, tok, spec_features("all", 2, "mean", "mean", True), toy_tasks(),
                          cfg(binary="off")).evaluate()            # the same network before any step
    out = train(tiny_model_dir, binary="off", max_steps=60, eval_every=20)
    first, last = out.history[0], out.history[-1]
    assert out.best_score >= 0.9 and out.best_score > float(np.mean(list(untrained.values()))) + 0.2
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert out.examples_seen == out.steps * 8


def test_the_tuning_metric_decides_labels_by_the_products_rule():
    """p >= threshold is on (heads/fitted.py): a logit of exactly 0 is p = 0.5, a positive, in tuning as in the
    predictions table (the tuning metric used to say logits > 0, which counted it negative)."""
    from heads.fitted import decide

    logits = np.array([[0.0], [0.0], [-1.0]], np.float32)
    y = np.array([1, 1, 0])
    assert task_metric("binary", logits, y) == 1.0
    assert decide("binary", logits, np.array([0.5], np.float32)).classes.tolist() == [1, 1, 0]
    ml = np.array([[0.0, -3.0], [2.0, 0.0]], np.float32)
    assert task_metric("multilabel", ml, np.array([[1, 0], [1, 1]])) == 1.0
    assert task_metric("multiclass", np.array([[1.0, 2.0], [3.0, 0.0]], np.float32), np.array([1, 0])) == 1.0


def test_same_seed_same_weights_other_seed_other_weights(tiny_model_dir):
    a = train(tiny_model_dir, max_steps=12, eval_every=6)
    b = train(tiny_model_dir, max_steps=12, eval_every=6)
    c = train(tiny_model_dir, max_steps=12, eval_every=6, seed=4)
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert len(a.history) == len(b.history)
    assert a.history == [dict(r, seconds=s["seconds"]) for r, s in zip(b.history, a.history)]


def test_keep_general_keeps_features_closer_to_the_base(tiny_model_dir):
    free = train(tiny_model_dir, binary="off", max_steps=30, lr=3e-3)
    kept = train(tiny_model_dir, binary="off", max_steps=30, lr=3e-3, keep_general=5.0)
    base, tok = load_trunk(str(tiny_model_dir))
    texts = GOOD + BAD + TOPIC_A + TOPIC_B
    ids, mask = pad(tok(texts)["input_ids"], 0, "cpu")
    feats = spec_features("all", 2, "mean", "mean", True)

    def emb(m):
        net = SharedEncoder(m.eval(), feats, toy_tasks(), 0)
        with torch.no_grad():
            return net.features(ids, mask)

    b = emb(base)
    drift = {k: float((1 - torch.nn.functional.cosine_similarity(emb(m.model), b)).mean()) for k, m in
             (("free", free), ("kept", kept))}
    assert drift["kept"] < drift["free"], drift


def test_bit_margin_moves_features_away_from_their_thresholds(tiny_model_dir):
    free = train(tiny_model_dir, binary="ste", max_steps=30, lr=3e-3)
    kept = train(tiny_model_dir, binary="ste", max_steps=30, lr=3e-3, bit_margin=5.0)
    tok = load_trunk(str(tiny_model_dir))[1]
    ids, mask = pad(tok(GOOD + BAD + TOPIC_A + TOPIC_B)["input_ids"], 0, "cpu")
    feats = spec_features("all", 2, "mean", "mean", True)

    def margin(m):
        net = SharedEncoder(m.eval(), feats, toy_tasks(), 0)
        with torch.no_grad():
            return float(net.bit_margin_loss(net.features(ids, mask)).mean())

    assert margin(kept.model) < 0.8 * margin(free.model)


def test_bit_margin_is_validated():
    with pytest.raises(ConfigError, match="bit_margin"):
        MultiTaskConfig(bit_margin=-1.0).validate("conf.yaml", "training.")


@pytest.mark.parametrize("calibrated", [False, True])
def test_straight_through_forward_is_exactly_the_stored_codes_decoded(calibrated):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 24)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    z[0, :3] = 0.0                                            # exactly on the threshold: bit 0, decoded -1
    thr = np.median(z, axis=0).astype(np.float32) if calibrated else None
    if calibrated:
        z[1, :] = thr                                         # every value on its threshold
    spec = FeatureSpec.of(model={"name": "t", "sha256": "0"}, layers=(1,), layer_combine="mean", pooling="mean",
                       normalize=True, max_length=16, dim=24, quantization="binary",
                       threshold_mode="calibrated" if calibrated else "zero", thresholds=thr)
    stored = spec.decode(spec.encode_features(z))

    class Stub(torch.nn.Module):
        config = type("C", (), {"hidden_size": 24})()

    net = SharedEncoder(Stub(), spec_features([1], 1, "mean", "mean", True), toy_tasks()[:1], 0, thr)
    zt = torch.tensor(z, requires_grad=True)
    x = net.head_input(zt, binary=True)
    assert np.array_equal(x.detach().numpy(), stored)
    x.sum().backward()                                        # straight-through: the identity on unit-RMS features
    assert torch.allclose(zt.grad, torch.full_like(zt, net.scale))


def test_micro_batches_stay_under_the_token_budget_and_cover_every_example():
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 60, 200)
    batches = micro_batches(lengths, 256)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))
    assert all(len(b) * lengths[b].max() <= 256 for b in batches)
    assert micro_batches(np.array([300]), 256)[0].tolist() == [0]   # one over-long text still gets its batch


def test_temperature_sampling_between_proportional_and_uniform():
    sizes = [10_000, 1_000, 100]

    def shares(t):
        s = TaskSampler(sizes, t, seed=0)
        drawn = np.array([task for _ in range(200) for task, _ in s.step(50)])
        return np.bincount(drawn, minlength=3) / len(drawn)

    prop, mid, flat = shares(1.0), shares(2.0), shares(100.0)
    assert abs(prop[2] - 100 / 11_100) < 0.004 and prop[2] > 0
    assert prop[2] < mid[2] < flat[2] and abs(flat[2] - 1 / 3) < 0.03
    s = TaskSampler([3], 1.0, seed=0)                      # a small task is revisited in reshuffled passes
    rows = [i for _ in range(3) for _, i in s.step(3)]
    assert sorted(rows[:3]) == sorted(rows[3:6]) == [0, 1, 2]


def test_losses_mask_unknown_labels_and_tasks_refuse_unlabelled_rows():
    logits = torch.tensor([[5.0, -5.0], [0.0, 0.0]])
    y = torch.tensor([[1, -1], [-1, -1]])
    per = task_loss("multilabel", logits, y)
    assert per[0] < 0.01 and per[1] == 0
    t = TaskConfig(name="s", kind="binary", columns=("label",))
    with pytest.raises(LabelError, match="1 train rows have no label"):
        TaskData(t, 2, ["a", "b"], np.array([1, -1]), ["a"], np.array([1]))
    with pytest.raises(LabelError, match="no validation rows"):
        TaskData(t, 2, ["a"], np.array([1]), [], np.zeros(0, np.int64))


def test_distillation_lowers_the_students_loss_against_the_teacher(tiny_model_dir):
    from tuning.distill import first_layers, task_logits
    from tuning.losses import soft_target_loss

    torch.set_num_threads(1)
    sent = toy_tasks()[0]
    model, tok = load_trunk(str(tiny_model_dir))
    feats = spec_features("all", 2, "mean", "mean", True)
    teacher = train_shared_encoder(model, tok, feats, [sent], cfg(binary="off", max_steps=40, eval_every=20))
    soft = task_logits(teacher, tok, feats, sent, sent.train_texts, 16)
    assert soft.shape == (len(sent.train_texts), 1)
    distilled = dataclasses.replace(sent, train_teacher_logits=soft)
    student_feats = spec_features("last", 1, "mean", "mean", True)

    def student_loss(steps: int) -> float:
        student = first_layers(load_trunk(str(tiny_model_dir))[0], 1)
        assert student.config.num_hidden_layers == 1 and len(student.encoder.layer) == 1
        out = train_shared_encoder(student, tok, student_feats, [distilled],
                                   cfg(binary="off", max_steps=steps, eval_every=steps, distill_alpha=0.0))
        got = torch.as_tensor(task_logits(out, tok, student_feats, sent, sent.train_texts, 16))
        # the soft-target loss less its floor (the teacher's own entropy): KL(teacher || student)
        floor = soft_target_loss("binary", torch.as_tensor(soft), torch.as_tensor(soft), 2.0)
        return float((soft_target_loss("binary", got, torch.as_tensor(soft), 2.0) - floor).mean())

    before, after = student_loss(1), student_loss(80)
    assert after < 0.5 * before, (before, after)
    with pytest.raises(ValueError, match="teacher logit rows"):
        dataclasses.replace(sent, train_teacher_logits=soft[:3])
