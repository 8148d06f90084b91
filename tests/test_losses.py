"""distill.losses against a direct full-tensor reference (F.kl_div, F.cross_entropy on whole tensors)."""
from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from distill.losses import DIVERGENCES, KL_REDUCTIONS, LossConfig, blended_kd_loss, chunked_kd_loss, count_valid_tokens
from distill.teacher_target import ENSEMBLES, SparseTarget, ensemble_log_probs, teacher_head_target

TOL = dict(rtol=1e-5, atol=1e-5)
B, T, H, V = 3, 6, 8, 17
PAD_V = 4  # padded embedding rows beyond the tokenizer's vocabulary


def make_case(seed: int = 0, dtype=torch.float32, batch: int = B):
    """Student hidden/lm_head (with padded rows), two teachers of different padded widths, labels."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, T, H, generator=gen, dtype=dtype)
    weight = torch.randn(V + PAD_V, H, generator=gen, dtype=dtype)
    bias = torch.randn(V + PAD_V, generator=gen, dtype=dtype)
    teachers = [
        2.0 * torch.randn(batch, T, V + 1, generator=gen, dtype=dtype),
        torch.randn(batch, T, V + 5, generator=gen, dtype=dtype),
    ]
    labels = torch.randint(0, V, (batch, T), generator=gen)
    labels[0, 3] = -100
    labels[1, :2] = -100
    if batch > 2:
        labels[2, 4:] = -100
    return hidden, weight, bias, teachers, labels


def reference(student_logits, teachers, labels, config: LossConfig, *, vocab):
    """The loss of ARCHITECTURE.md written out on full (B, T, V) tensors."""
    alpha, temperature, divergence, ensemble = config.alpha, config.temperature, config.divergence, config.ensemble
    weights, kl_reduction = config.teacher_weights, config.kl_reduction
    s = student_logits[..., :vocab]
    zs = [z[..., :vocab] for z in teachers]
    w = [1.0 / len(zs)] * len(zs) if weights is None else [x / sum(weights) for x in weights]
    if ensemble == "logits":
        p = F.softmax(sum(wk * z for wk, z in zip(w, zs)) / temperature, dim=-1)
    else:
        p = sum(wk * F.softmax(z / temperature, dim=-1) for wk, z in zip(w, zs))
    log_q = F.log_softmax(s / temperature, dim=-1)
    q = log_q.exp()

    def per_position(log_q, p, q):  # (..., V) -> (...)
        if divergence == "forward_kl":
            return F.kl_div(log_q, p, reduction="none").sum(-1)
        if divergence == "reverse_kl":
            return F.kl_div(p.log(), q, reduction="none").sum(-1)
        log_m = (0.5 * (p + q)).log()
        return 0.5 * F.kl_div(log_m, p, reduction="none").sum(-1) + 0.5 * F.kl_div(log_m, q, reduction="none").sum(-1)

    next_labels = labels[:, 1:]
    ce = F.cross_entropy(s[:, :-1].reshape(-1, vocab), next_labels.reshape(-1), ignore_index=-100)
    if kl_reduction == "token_mean":
        mask = next_labels != -100
        kl = per_position(log_q[:, :-1], p[:, :-1], q[:, :-1])[mask].mean() * temperature**2
    elif divergence == "forward_kl":
        kl = F.kl_div(log_q, p, reduction="batchmean") * temperature**2
    else:
        kl = per_position(log_q, p, q).sum() / s.shape[0] * temperature**2
    return alpha * ce + (1 - alpha) * kl, ce, kl


OPTIONS = list(itertools.product(DIVERGENCES, ENSEMBLES, [None, (0.7, 0.3)], KL_REDUCTIONS))


@pytest.mark.parametrize("divergence,ensemble,weights,kl_reduction", OPTIONS)
def test_matches_full_tensor_reference(divergence, ensemble, weights, kl_reduction):
    hidden, weight, bias, teachers, labels = make_case()
    config = LossConfig(alpha=0.3, temperature=2.0, divergence=divergence, ensemble=ensemble, teacher_weights=weights, kl_reduction=kl_reduction, chunk_size=4)
    params = [hidden.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]

    ref_loss, ref_ce, ref_kl = reference(F.linear(hidden, weight, bias), teachers, labels, config, vocab=V)
    ref_grads = torch.autograd.grad(ref_loss, params)

    plain = blended_kd_loss(F.linear(hidden, weight, bias), teachers, labels, config, vocab_size=V)
    torch.testing.assert_close(plain.loss, ref_loss, **TOL)
    torch.testing.assert_close(plain.ce, ref_ce, **TOL)
    torch.testing.assert_close(plain.kl, ref_kl, **TOL)
    for got, want in zip(torch.autograd.grad(plain.loss, params), ref_grads):
        torch.testing.assert_close(got, want, **TOL)

    chunked = chunked_kd_loss(hidden, weight, bias, labels, teachers, config, vocab_size=V)
    torch.testing.assert_close(chunked.loss, ref_loss, **TOL)
    torch.testing.assert_close(chunked.ce, ref_ce, **TOL)
    torch.testing.assert_close(chunked.kl, ref_kl, **TOL)
    for got, want in zip(torch.autograd.grad(chunked.loss, params), ref_grads):
        torch.testing.assert_close(got, want, **TOL)
    assert plain.num_tokens == chunked.num_tokens == int((labels[:, 1:] != -100).sum())


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_chunk_size_does_not_change_anything(chunk_size):
    hidden, weight, bias, teachers, labels = make_case(seed=1)
    params = [hidden.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    config = LossConfig(alpha=0.5, temperature=2.0, chunk_size=chunk_size)
    plain = blended_kd_loss(F.linear(hidden, weight, bias), teachers, labels, config, vocab_size=V)
    chunked = chunked_kd_loss(hidden, weight, bias, labels, teachers, config, vocab_size=V)
    torch.testing.assert_close(chunked.loss, plain.loss, **TOL)
    for got, want in zip(torch.autograd.grad(chunked.loss, params), torch.autograd.grad(plain.loss, params)):
        torch.testing.assert_close(got, want, **TOL)
    with torch.no_grad():  # the no-grad path gives the same value
        torch.testing.assert_close(chunked_kd_loss(hidden, weight, bias, labels, teachers, config, vocab_size=V).loss, plain.loss.detach(), **TOL)


def test_chunked_never_saves_more_than_one_chunk_of_logits():
    hidden, weight, bias, teachers, labels = make_case(batch=8)
    params = [hidden.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    chunk = 4
    largest = [0]  # most rows of any saved vocabulary-wide tensor

    def pack(t):
        is_weight = t.untyped_storage().data_ptr() == weight.untyped_storage().data_ptr()  # W^T, (H, V)
        if t.dim() >= 2 and t.shape[-1] >= V and not is_weight:
            largest[0] = max(largest[0], t.numel() // t.shape[-1])
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = chunked_kd_loss(hidden, weight, bias, labels, teachers, LossConfig(alpha=0.5, temperature=2.0, chunk_size=chunk), vocab_size=V)
    out.loss.backward()
    assert 0 < largest[0] <= chunk, largest[0]  # (chunk, V) at most, never (M, V)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_teacher_head_target_equals_teacher_logits():
    hidden, weight, bias, _, labels = make_case(seed=2)
    gen = torch.Generator().manual_seed(5)
    t_hidden = [torch.randn(B, T, 6, generator=gen), torch.randn(B, T, 10, generator=gen)]
    t_weight = [torch.randn(V + 2, 6, generator=gen), torch.randn(V, 10, generator=gen)]
    t_bias = [None, torch.randn(V, generator=gen)]
    logits = [F.linear(h, w, b) for h, w, b in zip(t_hidden, t_weight, t_bias)]
    config = LossConfig(alpha=0.2, temperature=1.5, ensemble="probs", chunk_size=3)
    want = chunked_kd_loss(hidden, weight, bias, labels, logits, config, vocab_size=V)
    got = chunked_kd_loss(hidden, weight, bias, labels, teacher_head_target(t_hidden, t_weight, t_bias), config, vocab_size=V)
    torch.testing.assert_close(got.loss, want.loss, **TOL)


def test_masked_positions_change_nothing():
    hidden, weight, bias, teachers, labels = make_case(seed=3)
    logits = F.linear(hidden, weight, bias)
    ignored = torch.zeros(B, T, dtype=torch.bool)  # positions whose next label is -100, and each last one
    ignored[:, :-1] = labels[:, 1:] == -100
    ignored[:, -1] = True
    config = LossConfig(alpha=0.4, temperature=2.0, chunk_size=3)
    base = blended_kd_loss(logits.clone().requires_grad_(), teachers, labels, config, vocab_size=V)

    noisy_logits = logits.clone()
    noisy_logits[ignored] = 50 * torch.randn(int(ignored.sum()), V + PAD_V)
    noisy_teachers = [z.clone() for z in teachers]
    for z in noisy_teachers:
        z[ignored] = -30 * torch.rand(int(ignored.sum()), z.shape[-1])
    noisy_logits.requires_grad_()
    noisy = blended_kd_loss(noisy_logits, noisy_teachers, labels, config, vocab_size=V)
    torch.testing.assert_close(noisy.loss, base.loss, **TOL)
    (grad,) = torch.autograd.grad(noisy.loss, noisy_logits)
    assert grad[ignored].abs().max() == 0

    noisy_hidden = hidden.clone()
    noisy_hidden[ignored] = 100.0
    chunked = chunked_kd_loss(noisy_hidden.requires_grad_(), weight, bias, labels, noisy_teachers, config, vocab_size=V)
    torch.testing.assert_close(chunked.loss, base.loss, **TOL)
    (grad,) = torch.autograd.grad(chunked.loss, noisy_hidden)
    assert grad[ignored].abs().max() == 0


def test_kl_is_scaled_by_temperature_squared():
    _, _, _, teachers, labels = make_case(seed=4)
    logits = torch.randn(B, T, V)
    mask = labels[:, 1:] != -100
    for temperature in (1.0, 2.0, 4.0):
        out = blended_kd_loss(logits, teachers, labels, LossConfig(alpha=0.0, temperature=temperature), vocab_size=V)
        p = F.softmax(sum(z[..., :V] for z in teachers)[:, :-1] / (2 * temperature), dim=-1)
        unscaled = F.kl_div(F.log_softmax(logits[:, :-1] / temperature, -1), p, reduction="none").sum(-1)[mask].mean()
        torch.testing.assert_close(out.kl, unscaled * temperature**2, **TOL)
        torch.testing.assert_close(out.loss, out.kl, **TOL)


@pytest.mark.parametrize("num_valid_tokens", [None, 0, 10])
def test_empty_mask_gives_zero_loss_and_zero_gradients(num_valid_tokens):
    hidden, weight, bias, teachers, _ = make_case()
    labels = torch.full((B, T), -100)
    labels[:, 0] = 3  # first labels are never targets after the shift
    params = [hidden.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    config = LossConfig(alpha=0.5, temperature=2.0)
    kwargs = dict(vocab_size=V, num_valid_tokens=num_valid_tokens)
    for out in (
        blended_kd_loss(F.linear(hidden, weight, bias), teachers, labels, config, **kwargs),
        chunked_kd_loss(hidden, weight, bias, labels, teachers, config, **kwargs),
    ):
        assert out.loss.item() == 0.0 and out.num_tokens == 0
        assert out.ce.item() == 0.0 and out.kl.item() == 0.0
        grads = torch.autograd.grad(out.loss, params)
        assert all(torch.isfinite(g).all() and g.abs().max() == 0 for g in grads)
    assert count_valid_tokens(labels).item() == 0


def test_gradcheck_double():
    gen = torch.Generator().manual_seed(6)
    b, t, h, v = 2, 3, 4, 5
    hidden = torch.randn(b, t, h, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, generator=gen, dtype=torch.float64, requires_grad=True)
    teachers = [torch.randn(b, t, v, generator=gen, dtype=torch.float64) for _ in range(2)]
    labels = torch.tensor([[1, 2, -100], [0, 4, 3]])
    sparse = SparseTarget.from_log_probs(ensemble_log_probs([z.reshape(-1, v) for z in teachers], 2.0), 2, 2.0)
    for divergence, target in [("forward_kl", teachers), ("jsd", teachers), ("reverse_kl", teachers), ("forward_kl", sparse)]:
        config = LossConfig(alpha=0.3, temperature=2.0, divergence=divergence, chunk_size=2)
        assert torch.autograd.gradcheck(
            lambda s: blended_kd_loss(s, target, labels, config).loss, (F.linear(hidden, weight, bias).detach().requires_grad_(),)
        )
        assert torch.autograd.gradcheck(
            lambda x, w, c: chunked_kd_loss(x, w, c, labels, target, config).loss, (hidden, weight, bias)
        )


def test_legacy_batchmean_equals_babyllama_formula():
    """BabyLlama's DistillationTrainer.compute_loss, verbatim in substance, on a real HF student."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(7)
    config = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=T)
    student = LlamaForCausalLM(config)
    input_ids = torch.randint(0, V, (B, T))
    labels = input_ids.clone()
    labels[1, 4:] = -100  # padding: BabyLlama's CE skips it, its KL does not
    teachers = [torch.randn(B, T, V), 3 * torch.randn(B, T, V)]
    temperature, alpha = 2.0, 0.5
    outputs_student = student(input_ids=input_ids, labels=labels)

    avg_teacher_logits = torch.stack(teachers).mean(dim=0)
    loss_function = torch.nn.KLDivLoss(reduction="batchmean")
    loss_logits = loss_function(
        F.log_softmax(outputs_student.logits / temperature, dim=-1),
        F.softmax(avg_teacher_logits / temperature, dim=-1),
    ) * (temperature**2)
    babyllama = alpha * outputs_student.loss + (1.0 - alpha) * loss_logits

    ours = blended_kd_loss(outputs_student.logits, teachers, labels, LossConfig(alpha=alpha, temperature=temperature, kl_reduction="legacy_batchmean"))
    torch.testing.assert_close(ours.loss, babyllama, **TOL)
    torch.testing.assert_close(ours.ce, outputs_student.loss, **TOL)
    # ours divides by tokens, theirs by rows: the legacy KL is ~seq_len times larger
    token_mean = blended_kd_loss(outputs_student.logits, teachers, labels, LossConfig(alpha=alpha, temperature=temperature))
    torch.testing.assert_close(token_mean.ce, outputs_student.loss, **TOL)
    assert ours.kl.item() > 3 * token_mean.kl.item()


def test_vocab_slicing_drops_padded_rows_instead_of_padding():
    hidden, weight, bias, teachers, labels = make_case(seed=8)
    with torch.no_grad():
        weight[V:] = 0.0
        bias[V:] = 40.0  # huge logits on padded rows would dominate if they leaked in
    params = [hidden.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    config = LossConfig(alpha=0.5, temperature=2.0, chunk_size=4)
    sliced = blended_kd_loss(F.linear(hidden, weight[:V], bias[:V]), [z[..., :V] for z in teachers], labels, config)
    padded = blended_kd_loss(F.linear(hidden, weight, bias), teachers, labels, config, vocab_size=V)
    chunked = chunked_kd_loss(hidden, weight, bias, labels, teachers, config, vocab_size=V)
    torch.testing.assert_close(padded.loss, sliced.loss, **TOL)
    torch.testing.assert_close(chunked.loss, sliced.loss, **TOL)
    _, grad_w, grad_b = torch.autograd.grad(chunked.loss, params)
    assert grad_w[V:].abs().max() == 0 and grad_b[V:].abs().max() == 0
    with pytest.raises(ValueError, match="fewer than vocab_size"):
        blended_kd_loss(F.linear(hidden, weight, bias), teachers, labels, config, vocab_size=V + PAD_V + 1)


@pytest.mark.parametrize("kl_reduction", KL_REDUCTIONS)
def test_one_batch_of_8_equals_two_accumulated_batches_of_4(kl_reduction):
    gen = torch.Generator().manual_seed(9)
    hidden = torch.randn(8, T, H, generator=gen)
    weight = torch.randn(V, H, generator=gen, requires_grad=True)
    teachers = [torch.randn(8, T, V, generator=gen) for _ in range(2)]
    labels = torch.randint(0, V, (8, T), generator=gen)
    labels[:4, 2:] = -100  # the first half is mostly padding, so per-micro-batch means would differ
    config = LossConfig(alpha=0.5, temperature=2.0, kl_reduction=kl_reduction, chunk_size=5)

    def run(loss_fn, accumulate, global_count):
        weight.grad = None
        total = 0.0
        if not accumulate:
            out = loss_fn(slice(0, 8), None)
            out.loss.backward()
            return out.loss.detach(), weight.grad.clone()
        for part in (slice(0, 4), slice(4, 8)):
            out = loss_fn(part, global_count)
            out.loss.backward()  # gradients add up, like accelerator.accumulate
            total = total + out.loss.detach()
        return total, weight.grad.clone()

    n = count_valid_tokens(labels[:4]) + count_valid_tokens(labels[4:])
    assert n == count_valid_tokens(labels)
    fns = {
        "plain": lambda part, count: blended_kd_loss(hidden[part] @ weight.T, [z[part] for z in teachers], labels[part], config, num_valid_tokens=count),
        "chunked": lambda part, count: chunked_kd_loss(hidden[part], weight, None, labels[part], [z[part] for z in teachers], config, num_valid_tokens=count),
    }
    for fn in fns.values():
        loss8, grad8 = run(fn, False, None)
        loss44, grad44 = run(fn, True, n)
        if kl_reduction == "token_mean":
            torch.testing.assert_close(loss44, loss8, **TOL)
            torch.testing.assert_close(grad44, grad8, **TOL)
            naive, _ = run(fn, True, None)
            assert not torch.allclose(naive / 2, loss8, rtol=1e-3)  # the bug num_valid_tokens avoids
        else:  # legacy divides its KL by the local rows (B), as BabyLlama does: only CE is global
            assert torch.isfinite(loss44)


def test_sparse_target_with_all_tokens_equals_dense_and_top_k_bounds_it():
    hidden, weight, bias, teachers, labels = make_case(seed=10)
    params = [hidden.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    temperature = 2.0
    log_p = ensemble_log_probs([z[..., :V].reshape(-1, V) for z in teachers], temperature)  # (N, V)
    config = LossConfig(alpha=0.0, temperature=temperature)
    dense = chunked_kd_loss(hidden, weight, bias, labels, teachers, config, vocab_size=V)
    full = chunked_kd_loss(hidden, weight, bias, labels, SparseTarget.from_log_probs(log_p, V, temperature), dataclasses.replace(config, chunk_size=4), vocab_size=V)
    torch.testing.assert_close(full.loss, dense.loss, **TOL)
    for got, want in zip(torch.autograd.grad(full.loss, params), torch.autograd.grad(dense.loss, params)):
        torch.testing.assert_close(got, want, **TOL)
    previous = 0.0
    for k in (1, 4, 8, V - 1):  # coarsening: a lower bound that rises towards the full KL
        sparse = blended_kd_loss(F.linear(hidden, weight, bias), SparseTarget.from_log_probs(log_p, k, temperature), labels, config, vocab_size=V)
        assert previous - 1e-6 <= sparse.kl.item() <= dense.kl.item() + 1e-6
        previous = sparse.kl.item()


def test_sparse_gradient_on_top_k_logits_is_exact():
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(1, 4, V, generator=gen, requires_grad=True)
    teachers = [torch.randn(1, 4, V, generator=gen)]
    labels = torch.randint(0, V, (1, 4), generator=gen)
    target = SparseTarget.from_log_probs(ensemble_log_probs([teachers[0].reshape(-1, V)], 1.5), 5, 1.5)
    config = LossConfig(alpha=0.0, temperature=1.5)
    (g_dense,) = torch.autograd.grad(blended_kd_loss(logits, teachers, labels, config).loss, logits)
    (g_sparse,) = torch.autograd.grad(blended_kd_loss(logits, target, labels, config).loss, logits)
    top = torch.zeros(4, V, dtype=torch.bool).scatter(1, target.indices, True)[:3]  # rows 0..2 have targets
    torch.testing.assert_close(g_sparse[0, :3][top], g_dense[0, :3][top], **TOL)
    assert not torch.allclose(g_sparse[0, :3][~top], g_dense[0, :3][~top])


def test_refuses_bad_options_and_a_target_at_another_temperature():
    hidden, weight, bias, teachers, labels = make_case()
    logits = F.linear(hidden, weight, bias)
    target = SparseTarget.from_log_probs(ensemble_log_probs([z[..., :V].reshape(-1, V) for z in teachers], 2.0), 3, 2.0)
    with pytest.raises(ValueError, match="temperature 2.0"):
        blended_kd_loss(logits, target, labels, LossConfig(alpha=0.5, temperature=1.0), vocab_size=V)
    with pytest.raises(ValueError, match="divergence"):
        LossConfig(alpha=0.5, temperature=1.0, divergence="kl")
    with pytest.raises(ValueError, match="alpha"):
        LossConfig(alpha=1.5, temperature=1.0)
    with pytest.raises(ValueError, match="teacher weights"):
        blended_kd_loss(logits, teachers, labels, LossConfig(alpha=0.5, temperature=1.0, teacher_weights=[1.0]), vocab_size=V)
    with pytest.raises(ValueError, match="teacher weights"):
        LossConfig(alpha=0.5, temperature=1.0, teacher_weights=[1.0, -1.0])
    assert LossConfig(alpha=0.5, temperature=1.0).uses_teachers and not LossConfig(alpha=1.0, temperature=1.0).uses_teachers


def test_ensemble_probs_is_stable_for_extreme_logits():
    z1 = torch.tensor([[1000.0, 0.0, -1000.0]])
    z2 = torch.tensor([[-1000.0, 0.0, 1000.0]])
    log_p = ensemble_log_probs([z1, z2], 1.0, mode="probs")
    assert torch.isfinite(log_p[:, :1]).all() and torch.isfinite(log_p[:, 2:]).all()
    torch.testing.assert_close(log_p[0, 0], torch.tensor(math.log(0.5)))
    torch.testing.assert_close(ensemble_log_probs([z1, z2], 1.0, mode="probs", weights=[3, 1])[0, 0], torch.tensor(math.log(0.75)))


def test_pinned_value():
    hidden, weight, bias, teachers, labels = make_case(seed=0)
    out = chunked_kd_loss(hidden, weight, bias, labels, teachers, LossConfig(alpha=0.5, temperature=2.0), vocab_size=V)
    assert out.num_tokens == 11
    assert out.loss.item() == pytest.approx(PINNED_LOSS, abs=1e-5)
    assert out.ce.item() == pytest.approx(PINNED_CE, abs=1e-5)
    assert out.kl.item() == pytest.approx(PINNED_KL, abs=1e-5)


PINNED_LOSS, PINNED_CE, PINNED_KL = 3.9868820, 4.6398740, 3.3338892  # torch 2.13 CPU, seed 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_sparse_target_matches_bucket_reference(divergence):
    """Against the divergence of explicit (k+1)-bucket probabilities, q_tail = 1 - sum of top-k q."""
    hidden, weight, bias, teachers, labels = make_case(seed=12)
    params = [hidden.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    temperature, k = 2.0, 5
    log_p = ensemble_log_probs([z[..., :V].reshape(-1, V) for z in teachers], temperature, "probs")
    target = SparseTarget.from_log_probs(log_p, k, temperature)
    logits = F.linear(hidden, weight, bias)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    mask = mask.reshape(-1)
    q = F.softmax(logits.reshape(-1, V + PAD_V)[:, :V] / temperature, -1)[mask]
    idx = target.indices[mask]
    p_top = target.logprobs[mask].exp()
    q_top = q.gather(1, idx)
    p_b = torch.cat([p_top, 1 - p_top.sum(1, keepdim=True)], 1)
    q_b = torch.cat([q_top, 1 - q_top.sum(1, keepdim=True)], 1)
    if divergence == "forward_kl":
        per = F.kl_div(q_b.log(), p_b, reduction="none").sum(1)
    elif divergence == "reverse_kl":
        per = F.kl_div(p_b.log(), q_b, reduction="none").sum(1)
    else:
        m = 0.5 * (p_b + q_b)
        per = 0.5 * F.kl_div(m.log(), p_b, reduction="none").sum(1) + 0.5 * F.kl_div(m.log(), q_b, reduction="none").sum(1)
    want = per.mean() * temperature**2
    config = LossConfig(alpha=0.0, temperature=temperature, divergence=divergence, chunk_size=3)
    plain = blended_kd_loss(logits, target, labels, config, vocab_size=V)
    chunked = chunked_kd_loss(hidden, weight, bias, labels, target, config, vocab_size=V)
    torch.testing.assert_close(plain.kl, want, **TOL)
    torch.testing.assert_close(chunked.loss, want, **TOL)
    for got, ref in zip(torch.autograd.grad(chunked.loss, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(got, ref, **TOL)
