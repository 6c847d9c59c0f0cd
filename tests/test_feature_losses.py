"""Feature-distillation losses (spec §4) on real DC-CNN features, checked against NumPy.

Teacher and student features come from real cardiac slices (the ``real_slices`` fixture,
centre-cropped to 128×128 and average-pooled to 32×32) passed through seeded, untrained DC-CNN
blocks (D5C5 teacher, D3C5 students of width 32 and 16), tapped by forward hooks at the paths the
papers pair: teacher ``blocks.{i}.layers.2`` ↔ student ``blocks.{i}.layers.1``. Everything runs
in float64 so that each loss can be compared tightly with an independent NumPy computation of its
published formula, written out below (no call into the modules under test).
"""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdrecon.distillation.losses import FEATURE_LOSSES, FeatureLoss, build_feature_loss
from kdrecon.models import build_model

NAMES = ["at", "at-paper", "fitnets", "sp", "fsp", "cc", "nst", "ft", "pkt"]
MODULES = [
    "",  # the package itself
    "base", "attention_transfer", "attention_transfer_paper", "fitnets", "similarity_preserving",
    "flow_of_solution", "correlation_congruence", "neuron_selectivity", "factor_transfer",
    "probabilistic_transfer",
]


# ---------------------------------------------------------------------------------------------
# Real features
# ---------------------------------------------------------------------------------------------


def _tap(model: torch.nn.Module, paths: list[str], image: torch.Tensor, cascades: int) -> list[torch.Tensor]:
    """Run the first ``cascades`` CNN blocks (no DC: the k-space is irrelevant here) and hook ``paths``."""
    modules = dict(model.named_modules())
    taken: dict[str, torch.Tensor] = {}
    handles = [
        modules[p].register_forward_hook(lambda m, i, o, p=p: taken.__setitem__(p, o.clone()))
        for p in paths
    ]
    try:
        x = image
        for block in model.blocks[:cascades]:
            x = block(x)
    finally:
        for h in handles:
            h.remove()
    return [taken[p] for p in paths]


@pytest.fixture(scope="module")
def images(real_slices) -> torch.Tensor:
    x = torch.from_numpy(real_slices[:4, 11:139, 11:139].copy())  # (4, 128, 128) float64
    return F.avg_pool2d(x[:, None], 4)  # (4, 1, 32, 32)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    teacher = build_model("D5C5").double().eval()
    torch.manual_seed(1)
    student = build_model("D3C5").double()
    torch.manual_seed(2)
    narrow = build_model("D3C5", channels=16).double()
    return teacher, student, narrow


@pytest.fixture(scope="module")
def feats(images, nets):
    """Dict of detached feature lists: teacher ``t``, students ``s`` (32 wide) and ``n`` (16 wide),
    plus within-cascade pairs for FSP (``t_fsp``, ``s_fsp``)."""
    teacher, student, narrow = nets
    with torch.no_grad():
        t = _tap(teacher, ["blocks.0.layers.2", "blocks.1.layers.2"], images, 2)
        s = _tap(student, ["blocks.0.layers.1", "blocks.1.layers.1"], images, 2)
        n = _tap(narrow, ["blocks.0.layers.1", "blocks.1.layers.1"], images, 2)
        t_fsp = _tap(teacher, ["blocks.0.layers.1", "blocks.0.layers.2"], images, 1)
        s_fsp = _tap(student, ["blocks.0.layers.0", "blocks.0.layers.1"], images, 1)
    out = {"t": t, "s": s, "n": n, "t_fsp": t_fsp, "s_fsp": s_fsp}
    for group in out.values():
        for f in group:
            assert f.dtype == torch.float64 and not f.requires_grad
    assert t[0].shape == (4, 32, 32, 32) and n[0].shape == (4, 16, 32, 32)
    return out


def _np(features):
    return [f.detach().numpy() for f in features]


def _inputs(name: str, feats, narrow: bool = False):
    """(student_channels, teacher_channels, student feats, teacher feats) for one method."""
    if name == "fsp":
        return [32, 32], [32, 32], feats["s_fsp"], feats["t_fsp"]
    s = feats["n"] if narrow else feats["s"]
    return [s[0].shape[1]] * 2, [32, 32], s, feats["t"]


def _build(name: str, student_channels, teacher_channels, **options) -> FeatureLoss:
    torch.manual_seed(3)
    return build_feature_loss(name, student_channels, teacher_channels, **options).double()


# ---------------------------------------------------------------------------------------------
# Independent NumPy references of the published formulas
# ---------------------------------------------------------------------------------------------


def _unit(x: np.ndarray, axis: int) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def ref_at(S, T, p=2):
    def amap(f):
        return _unit((np.abs(f) ** p).mean(axis=1).reshape(f.shape[0], -1), axis=1)

    return sum(np.mean((amap(s) - amap(t)) ** 2) for s, t in zip(S, T))


def ref_at_paper(S, T):
    def qmap(f):
        q = (f**2).sum(axis=1)  # (B, H, W)
        return q / np.maximum(np.sqrt((q**2).sum(axis=0, keepdims=True)), 1e-12)

    return np.mean([np.mean(np.abs(qmap(s) - qmap(t))) for s, t in zip(S, T)])


def _conv1x1(x, w, b):
    return np.einsum("oc,bchw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def ref_fitnets(S, T, regressors):
    total = 0.0
    for s, t, reg in zip(S, T, regressors):
        guided = s if reg is None else _conv1x1(s, *reg)
        total += np.mean((guided - t) ** 2)
    return total


def ref_sp(S, T):
    def gram(f):
        q = f.reshape(f.shape[0], -1)
        return _unit(q @ q.T, axis=1)

    return sum(np.sum((gram(t) - gram(s)) ** 2) / s.shape[0] ** 2 for s, t in zip(S, T))


def ref_fsp(S, T):
    def fsp(a, b):
        return np.einsum("bihw,bjhw->bij", a, b) / (a.shape[2] * a.shape[3])

    return sum(
        np.mean((fsp(T[k], T[k + 1]) - fsp(S[k], S[k + 1])) ** 2) for k in range(0, len(S), 2)
    )


def ref_cc(S, T, embeds=None, gamma=0.4, order=2, squared=False):
    def psi(f, embed):
        e = f.mean(axis=(2, 3))
        if embed is not None:
            w, b = embed
            e = e @ w.T + b
        e = _unit(e, axis=1)
        dots = e @ e.T
        return sum(
            math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * dots**p
            for p in range(order + 1)
        )

    total = 0.0
    for k, (s, t) in enumerate(zip(S, T)):
        es, et = (None, None) if embeds is None else embeds[k]
        diff = psi(s, es) - psi(t, et)
        dist = np.sum(diff**2) if squared else np.sqrt(np.sum(diff**2))
        total += dist / s.shape[0] ** 2
    return total


def ref_nst(S, T):
    def mmd2(s, t):
        s = _unit(s.reshape(s.shape[0], s.shape[1], -1), axis=2)
        t = _unit(t.reshape(t.shape[0], t.shape[1], -1), axis=2)

        def k(a, b):
            return np.einsum("bin,bjn->bij", a, b) ** 2

        return k(t, t).mean() + k(s, s).mean() - 2 * k(s, t).mean()

    return sum(mmd2(s, t) for s, t in zip(S, T))


def _conv3x3(x, w, b):
    h, wd = x.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = sum(
        np.einsum("oc,bchw->bohw", w[:, :, dy, dx], xp[:, :, dy : dy + h, dx : dx + wd])
        for dy in range(3)
        for dx in range(3)
    )
    return out + b[None, :, None, None]


def _leaky(x, slope=0.1):
    return np.where(x > 0, x, slope * x)


def ref_ft(S, T, translators, encoders):
    def two_convs(x, params):
        (w1, b1), (w2, b2) = params
        return _leaky(_conv3x3(_leaky(_conv3x3(x, w1, b1)), w2, b2))

    total = 0.0
    for s, t, tr, enc in zip(S, T, translators, encoders):
        fs = _unit(two_convs(s, tr).reshape(s.shape[0], -1), axis=1)
        ft = _unit(two_convs(t, enc).reshape(t.shape[0], -1), axis=1)
        total += np.mean(np.abs(ft - fs))
    return total


def ref_pkt(S, T, eps=1e-7):
    def probs(f):
        x = f.reshape(f.shape[0], -1)
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
        k = (x @ x.T + 1) / 2
        return k / k.sum(axis=1, keepdims=True)

    total = 0.0
    for s, t in zip(S, T):
        ps, pt = probs(s), probs(t)
        total += np.mean(pt * np.log((pt + eps) / (ps + eps)))
    return total


def _conv_params(seq):
    convs = [m for m in seq if isinstance(m, torch.nn.Conv2d)]
    return [(c.weight.detach().numpy(), c.bias.detach().numpy()) for c in convs]


# ---------------------------------------------------------------------------------------------
# Values equal the NumPy formulas
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("narrow", [False, True], ids=["32to32", "16to32"])
def test_attention_transfer_matches_numpy(feats, narrow):
    sc, tc, S, T = _inputs("at", feats, narrow)
    value = _build("at", sc, tc)(S, T)
    assert value.item() > 0
    np.testing.assert_allclose(value.item(), ref_at(_np(S), _np(T)), rtol=1e-10)


def test_channel_energy_and_its_gradient_equal_the_squared_sum():
    from kdrecon.distillation.losses.attention_transfer import ChannelEnergy

    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 5, 6, 7, dtype=torch.float64, generator=generator).relu()  # zero pixels included
    assert torch.autograd.gradcheck(ChannelEnergy.apply, (feature.clone().requires_grad_(),))
    ours, reference = feature.clone().requires_grad_(), feature.clone().requires_grad_()
    weights = torch.rand(2, 6, 7, dtype=torch.float64, generator=generator)
    (ChannelEnergy.apply(ours) * weights).sum().backward()
    (reference.square().sum(dim=1) * weights).sum().backward()
    torch.testing.assert_close(ChannelEnergy.apply(feature), feature.square().sum(dim=1))
    torch.testing.assert_close(ours.grad, reference.grad)


def test_channel_energy_of_a_bf16_feature_sums_in_float32_and_returns_a_bf16_gradient():
    """Under autocast AT takes the tapped bf16 features: the sums are those of their float32
    values, the gradient is 2F·g rounded to bf16 as the network's backward pass runs."""
    from kdrecon.distillation.losses.attention_transfer import ChannelEnergy

    generator = torch.Generator().manual_seed(1)
    feature = torch.randn(2, 32, 9, 10, generator=generator).relu().to(torch.bfloat16).requires_grad_()
    weights = torch.rand(2, 9, 10, generator=generator)
    energy = ChannelEnergy.apply(feature)
    assert energy.dtype == torch.float32
    exact = feature.detach().double().square().sum(dim=1)
    torch.testing.assert_close(energy.double(), exact, rtol=1e-6, atol=0)
    (energy * weights).sum().backward()
    assert feature.grad.dtype == torch.bfloat16
    expected = 2 * feature.detach().double() * weights.double().unsqueeze(1)
    torch.testing.assert_close(feature.grad.double(), expected, rtol=2**-7, atol=0)  # one bf16 rounding each


@pytest.mark.parametrize("method", ["at", "at-paper"])
def test_attention_transfer_of_bf16_features_equals_that_of_their_float32_copies(method):
    generator = torch.Generator().manual_seed(2)
    student, teacher = ([torch.randn(4, 32, 12, 12, generator=generator).relu().to(torch.bfloat16)] for _ in range(2))
    loss = build_feature_loss(method, [32], [32])
    assert loss.takes_low_precision_features
    value = loss(student, teacher)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss([f.float() for f in student], [f.float() for f in teacher]),
                               rtol=1e-6, atol=0)


def test_attention_transfer_from_teacher_maps_matches_numpy(feats):
    """The distiller caches AT's teacher maps (teacher_summary); the loss from them is the same."""
    sc, tc, S, T = _inputs("at", feats, True)
    loss = _build("at", sc, tc)
    maps = loss.teacher_summary(T)
    assert [tuple(m.shape) for m in maps] == [(t.shape[0], t.shape[2] * t.shape[3]) for t in T]
    student = [s.clone().requires_grad_() for s in S]
    value = loss(student, maps, summarised=True)
    np.testing.assert_allclose(value.item(), ref_at(_np(S), _np(T)), rtol=1e-6)  # maps are float32
    value.backward()
    reference = [s.clone().requires_grad_() for s in S]
    loss(reference, T).backward()
    for summarised, full in zip(student, reference):
        torch.testing.assert_close(summarised.grad, full.grad, rtol=1e-4, atol=1e-6 * full.grad.abs().max().item())
    with pytest.raises(ValueError, match="at: pair 0: a teacher map of shape"):
        loss(S, [m[:, :-1] for m in maps], summarised=True)


def test_attention_transfer_paper_matches_numpy(feats):
    sc, tc, S, T = _inputs("at-paper", feats)
    value = _build("at-paper", sc, tc)(S, T)
    np.testing.assert_allclose(value.item(), ref_at_paper(_np(S), _np(T)), rtol=1e-10)
    # The two AT variants are different losses on the same features.
    assert not np.isclose(value.item(), ref_at(_np(S), _np(T)))


def test_attention_transfer_paper_normalises_along_the_batch_axis(feats):
    from kdrecon.distillation.losses.attention_transfer_paper import paper_attention_map

    q = paper_attention_map(feats["t"][0])  # (B, H, W)
    norms = q.pow(2).sum(dim=0).sqrt()
    np.testing.assert_allclose(norms[norms > 0].numpy(), 1.0, rtol=1e-12)
    # so the loss of two slices depends on the batch they are in (a property of the KD-MRI code)
    loss = build_feature_loss("at-paper", [32], [32])
    s, t = feats["s"][0], feats["t"][0]
    assert not torch.isclose(loss([s[:2]], [t[:2]]), loss([s], [t]))


@pytest.mark.parametrize("narrow", [False, True], ids=["32to32", "16to32"])
def test_fitnets_matches_numpy(feats, narrow):
    sc, tc, S, T = _inputs("fitnets", feats, narrow)
    loss = _build("fitnets", sc, tc)
    regs = [
        None if isinstance(r, torch.nn.Identity) else (r.weight.detach().numpy(), r.bias.detach().numpy())
        for r in loss.regressors
    ]
    assert all(r is None for r in regs) != narrow  # regressors exactly where widths differ
    np.testing.assert_allclose(loss(S, T).item(), ref_fitnets(_np(S), _np(T), regs), rtol=1e-10)


def test_fitnets_forced_regressor_matches_numpy(feats):
    sc, tc, S, T = _inputs("fitnets", feats)
    loss = _build("fitnets", sc, tc, regressor=True)
    regs = [(r.weight.detach().numpy(), r.bias.detach().numpy()) for r in loss.regressors]
    np.testing.assert_allclose(loss(S, T).item(), ref_fitnets(_np(S), _np(T), regs), rtol=1e-10)


@pytest.mark.parametrize("narrow", [False, True], ids=["32to32", "16to32"])
def test_similarity_preserving_matches_numpy(feats, narrow):
    sc, tc, S, T = _inputs("sp", feats, narrow)
    np.testing.assert_allclose(_build("sp", sc, tc)(S, T).item(), ref_sp(_np(S), _np(T)), rtol=1e-10)


def test_fsp_matches_numpy(feats):
    sc, tc, S, T = _inputs("fsp", feats)
    value = _build("fsp", sc, tc)(S, T)
    assert value.item() > 0
    np.testing.assert_allclose(value.item(), ref_fsp(_np(S), _np(T)), rtol=1e-10)


def test_fsp_chain_uses_every_neighbouring_pair(feats):
    S, T = feats["s_fsp"] + feats["s"][1:], feats["t_fsp"] + feats["t"][1:]  # 3 features each
    loss = _build("fsp", [32] * 3, [32] * 3, chain=True)
    s, t = _np(S), _np(T)
    expected = ref_fsp(s[:2], t[:2]) + ref_fsp(s[1:], t[1:])
    np.testing.assert_allclose(loss(S, T).item(), expected, rtol=1e-10)


@pytest.mark.parametrize("squared", [False, True])
def test_correlation_congruence_matches_numpy(feats, squared):
    sc, tc, S, T = _inputs("cc", feats)
    loss = _build("cc", sc, tc, squared=squared)
    assert loss.connector_parameter_count() == 0
    value = loss(S, T)
    assert value.item() > 0
    np.testing.assert_allclose(value.item(), ref_cc(_np(S), _np(T), squared=squared), rtol=1e-10)


def test_correlation_congruence_with_embedding_matches_numpy(feats):
    sc, tc, S, T = _inputs("cc", feats, narrow=True)
    loss = _build("cc", sc, tc)
    linear = lambda m: (m.weight.detach().numpy(), m.bias.detach().numpy())  # noqa: E731
    embeds = [(linear(es), linear(et)) for es, et in zip(loss.embed_student, loss.embed_teacher)]
    np.testing.assert_allclose(loss(S, T).item(), ref_cc(_np(S), _np(T), embeds), rtol=1e-10)


@pytest.mark.parametrize("narrow", [False, True], ids=["32to32", "16to32"])
def test_neuron_selectivity_matches_numpy(feats, narrow):
    sc, tc, S, T = _inputs("nst", feats, narrow)
    np.testing.assert_allclose(_build("nst", sc, tc)(S, T).item(), ref_nst(_np(S), _np(T)), rtol=1e-9)


@pytest.mark.parametrize("narrow", [False, True], ids=["32to32", "16to32"])
def test_factor_transfer_matches_numpy(feats, narrow):
    sc, tc, S, T = _inputs("ft", feats, narrow)
    loss = _build("ft", sc, tc)
    translators = [_conv_params(tr) for tr in loss.translators]
    encoders = [_conv_params(p.encoder) for p in loss.paraphrasers]
    expected = ref_ft(_np(S), _np(T), translators, encoders)
    np.testing.assert_allclose(loss(S, T).item(), expected, rtol=1e-9)


@pytest.mark.parametrize("narrow", [False, True], ids=["32to32", "16to32"])
def test_probabilistic_transfer_matches_numpy(feats, narrow):
    sc, tc, S, T = _inputs("pkt", feats, narrow)
    value = _build("pkt", sc, tc)(S, T)
    assert value.item() > 0
    np.testing.assert_allclose(value.item(), ref_pkt(_np(S), _np(T)), rtol=1e-9)


def test_probabilistic_transfer_pooled(feats):
    sc, tc, S, T = _inputs("pkt", feats)
    pooled = lambda fs: [f.mean(axis=(2, 3)) for f in _np(fs)]  # noqa: E731
    np.testing.assert_allclose(
        _build("pkt", sc, tc, pool=True)(S, T).item(), ref_pkt(pooled(S), pooled(T)), rtol=1e-9
    )


# ---------------------------------------------------------------------------------------------
# Zero when the student reproduces the teacher
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in NAMES if n != "ft"])
def test_zero_when_student_equals_teacher(feats, name):
    _, _, _, T = _inputs(name, feats)
    loss = _build(name, [32, 32], [32, 32])
    assert abs(loss([t.clone() for t in T], T).item()) < 1e-12


def test_fitnets_zero_with_identity_regressor(feats):
    T = feats["t"]
    loss = _build("fitnets", [32, 32], [32, 32], regressor=True)
    with torch.no_grad():
        for r in loss.regressors:
            r.weight.copy_(torch.eye(32, dtype=torch.float64)[:, :, None, None])
            r.bias.zero_()
    assert loss(T, T).item() == 0.0


def test_factor_transfer_zero_when_translator_equals_encoder(feats):
    T = feats["t"]
    loss = _build("ft", [32, 32], [32, 32])
    assert loss(T, T).item() > 0  # different connectors, different factors
    for tr, para in zip(loss.translators, loss.paraphrasers):
        tr.load_state_dict(para.encoder.state_dict())
    assert loss(T, T).item() < 1e-12


# ---------------------------------------------------------------------------------------------
# Gradients: to the student features and the connectors; the teacher comes from no_grad
# ---------------------------------------------------------------------------------------------


# FSP compares C×C matrices entry by entry, so it has no 16 → 32 case.
GRADIENT_CASES = [(n, w) for n in NAMES for w in (False, True) if not (n == "fsp" and w)]


@pytest.mark.parametrize(
    "name, narrow", GRADIENT_CASES, ids=[f"{n}-{'16to32' if w else '32to32'}" for n, w in GRADIENT_CASES]
)
def test_gradients_reach_student_and_connectors(feats, name, narrow):
    sc, tc, S, T = _inputs(name, feats, narrow)
    student = [s.detach().clone().requires_grad_(True) for s in S]
    loss = _build(name, sc, tc)
    value = loss(student, T)  # teacher features were produced under torch.no_grad()
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    for s in student:
        assert s.grad is not None and s.grad.abs().sum() > 0
    for pname, p in loss.named_parameters():
        if name == "ft" and pname.startswith("paraphrasers."):
            assert p.grad is None  # pretrained, then kept fixed during transfer
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
    expected_connectors = {"fitnets": narrow, "cc": narrow, "ft": True}.get(name, False)
    assert (loss.connector_parameter_count() > 0) == expected_connectors


def test_gradients_reach_student_network(images, nets):
    teacher, student, _ = nets
    with torch.no_grad():
        T = _tap(teacher, ["blocks.0.layers.2"], images, 1)
    student.zero_grad()
    modules = dict(student.named_modules())
    taken = []
    handle = modules["blocks.0.layers.1"].register_forward_hook(lambda m, i, o: taken.append(o))
    try:
        student.blocks[0](images)
    finally:
        handle.remove()
    build_feature_loss("at", [32], [32])(taken, T).backward()
    assert student.blocks[0].layers[0].conv.weight.grad.abs().sum() > 0
    assert teacher.blocks[0].layers[0].conv.weight.grad is None


def test_factor_transfer_paraphraser_training(feats):
    T = feats["t"]
    loss = _build("ft", [32, 32], [32, 32])
    rec = loss.paraphraser_reconstruction_loss(T)
    rec.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.paraphraser_parameters())
    assert all(p.grad is None for p in loss.translators.parameters())
    expected = sum(
        F.mse_loss(p(t), t).item() for p, t in zip(loss.paraphrasers, T)
    )
    np.testing.assert_allclose(rec.item(), expected, rtol=1e-12)
    trainable = _build("ft", [32, 32], [32, 32], train_paraphraser=True)
    trainable(feats["s"], T).backward()
    assert all(p.grad is not None for p in trainable.paraphrasers[0].encoder.parameters())
    with pytest.raises(ValueError, match="teacher"):
        loss.paraphraser_reconstruction_loss(T[:1])


# ---------------------------------------------------------------------------------------------
# Invalid input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_list_lengths_raise(feats, name):
    sc, tc, S, T = _inputs(name, feats)
    loss = _build(name, sc, tc)
    with pytest.raises(ValueError, match="pair up"):
        loss(S, T[:1])
    with pytest.raises(ValueError, match="student features, built for 2"):
        loss(S[:1] + S[:1] + S[:1], T[:1] + T[:1] + T[:1])


@pytest.mark.parametrize("name", NAMES)
def test_incompatible_shapes_raise(feats, name):
    sc, tc, S, T = _inputs(name, feats)
    loss = _build(name, sc, tc)
    with pytest.raises(ValueError, match="channels"):
        loss([S[0][:, :8], S[1]], T)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        loss([S[0][0], S[1]], T)
    with pytest.raises(ValueError, match="batch"):
        loss([S[0][:2], S[1]], T)
    with pytest.raises(ValueError, match="sequences"):
        loss(S[0], T[0])
    with pytest.raises(ValueError, match="unknown option"):
        build_feature_loss(name, sc, tc, bogus=1)
    with pytest.raises(ValueError, match="pair up"):
        build_feature_loss(name, sc, tc[:1])
    if FEATURE_LOSSES[name].requires_equal_spatial_size:
        with pytest.raises(ValueError, match="spatial"):
            loss([S[0][..., :16, :16], S[1]], T)


def test_fsp_construction_errors():
    with pytest.raises(ValueError, match="equal student and teacher widths"):
        build_feature_loss("fsp", [16, 16], [32, 32])
    with pytest.raises(ValueError, match="pairs"):
        build_feature_loss("fsp", [32] * 3, [32] * 3)
    with pytest.raises(ValueError, match="regressor=False"):
        build_feature_loss("fitnets", [16], [32], regressor=False)


# ---------------------------------------------------------------------------------------------
# Registry, weights, connector counts, docstring examples
# ---------------------------------------------------------------------------------------------


def test_registry():
    assert sorted(FEATURE_LOSSES) == sorted(NAMES)
    for name, cls in FEATURE_LOSSES.items():
        assert issubclass(cls, FeatureLoss) and cls.name == name
        loss = build_feature_loss(name.upper(), [32, 32], [32, 32])
        assert type(loss) is cls
    with pytest.raises(ValueError, match="choose one of: at, at-paper, cc, fitnets, fsp, ft, nst, pkt, sp"):
        build_feature_loss("crd", [32], [32])


def test_default_weights():
    weights = {name: cls.default_weight for name, cls in FEATURE_LOSSES.items()}
    assert weights == {
        "at": 1000.0, "at-paper": 1.0, "fitnets": 100.0, "sp": 3000.0, "fsp": 50.0,
        "cc": 0.003, "nst": 50.0, "ft": 200.0, "pkt": 30000.0,
    }


def test_connector_parameter_counts():
    assert build_feature_loss("fitnets", [16], [32]).connector_parameter_count() == 16 * 32 + 32
    assert build_feature_loss("fitnets", [16, 32], [32, 32]).connector_parameter_count() == 16 * 32 + 32
    assert build_feature_loss("fitnets", [32], [32]).connector_parameter_count() == 0
    assert build_feature_loss("fitnets", [32], [32], regressor=True).connector_parameter_count() == 32 * 32 + 32
    assert build_feature_loss("cc", [16], [32]).connector_parameter_count() == (16 + 1) * 128 + (32 + 1) * 128
    assert build_feature_loss("cc", [32], [32], embed_dim=8).connector_parameter_count() == 2 * (33 * 8)
    m = 16  # factor channels: 0.5 · 32
    encoder = (32 * m * 9 + m) + (m * m * 9 + m)
    decoder = (m * 32 * 9 + 32) + (32 * 32 * 9 + 32)
    translator = (16 * m * 9 + m) + (m * m * 9 + m)
    assert build_feature_loss("ft", [16], [32]).connector_parameter_count() == encoder + decoder + translator
    for name in ("at", "at-paper", "sp", "fsp", "nst", "pkt"):
        assert build_feature_loss(name, [32, 32], [32, 32]).connector_parameter_count() == 0


@pytest.mark.parametrize("module", MODULES, ids=[m or "package" for m in MODULES])
def test_docstring_examples(module):
    mod = importlib.import_module("kdrecon.distillation.losses" + (f".{module}" if module else ""))
    assert mod.__doc__ and "Example" in mod.__doc__
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
