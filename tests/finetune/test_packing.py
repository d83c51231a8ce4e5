"""Packing == padding (same loss and gradients), attention never crosses packed examples, prompt tokens get
exactly zero gradient."""

from __future__ import annotations

import torch

from lmstack.finetune.chat_data import Rendered
from lmstack.finetune.packing import pack_batch, pack_rows, pad_batch
from lmstack.model import ModelConfig, Transformer


def examples(seed: int = 0) -> list[Rendered]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in (7, 12, 5, 9, 3, 14):
        ids = torch.randint(0, 101, (n,), generator=g).tolist()
        k = int(torch.randint(1, n - 1, (1,), generator=g))  # the last n - k tokens are the "answer"
        out.append(Rendered(ids, [0] * k + [1] * (n - k)))
    return out


def model(tiny_model_kwargs) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(**tiny_model_kwargs))


def test_first_fit_rows():
    assert pack_rows([7, 12, 5, 9, 3, 14], 20) == [[0, 1], [2, 3, 4], [5]]


def test_packed_loss_and_grads_equal_padded(tiny_model_kwargs):
    m = model(tiny_model_kwargs)
    ex = examples()
    losses, grads = [], []
    for x, pos, y in (pad_batch(ex), pack_batch(ex, 20)):
        m.zero_grad()
        loss = m(x, positions=pos, targets=y).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert pack_batch(ex, 20)[0].shape[0] == 3 < len(ex)  # fewer rows: that is the point of packing
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_packed_logits_equal_each_example_alone(tiny_model_kwargs):
    m = model(tiny_model_kwargs).eval()
    ex = examples()
    x, pos, _ = pack_batch(ex, 20)
    with torch.no_grad():
        packed = m(x, positions=pos).logits
        row, t = 1, 0
        for i in (2, 3, 4):  # row 1 holds examples 2, 3, 4
            n = len(ex[i].ids)
            alone = m(torch.tensor([ex[i].ids])).logits[0]
            torch.testing.assert_close(packed[row, t : t + n], alone, atol=1e-5, rtol=1e-5)
            t += n


def test_prompt_tokens_get_exactly_zero_gradient(tiny_model_kwargs):
    """Changing a prompt token's *target* changes nothing: only assistant targets enter the loss."""
    m = model(tiny_model_kwargs)
    ex = examples()
    x, pos, y = pad_batch(ex)
    logits = m(x, positions=pos).logits
    logits.retain_grad()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
    loss.backward()
    for b, r in enumerate(ex):
        for t in range(len(r.ids) - 1):
            g = logits.grad[b, t]
            if r.mask[t + 1]:
                assert g.abs().sum() > 0
            else:  # the prediction of a prompt (or padding) token contributes exactly nothing
                assert torch.equal(g, torch.zeros_like(g))
