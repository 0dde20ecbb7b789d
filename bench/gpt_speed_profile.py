"""Per-piece CPU profile of one training step of hylab's GPT and of the nanoGPT baseline
(bench/gpt_speed.py): each piece timed forward + backward at the step's shapes, the median of
`repeats` alternating runs, times the number of times a step runs it. Where hylab's net replaced
a piece by a fused one, the plain expression it replaced is timed beside it ("plain" column)."""

import statistics
import time

import torch
import torch.nn.functional as F


def fwd_bwd(fn, *shapes, ints=None):
    """A callable running fn on fresh leaves of these shapes (and fixed integer inputs), then backward."""
    data = [torch.randn(s) for s in shapes]

    def run():
        leaves = [d.clone().requires_grad_() for d in data]
        out = fn(*leaves, *(ints or []))
        (out if out.dim() == 0 else out.sum()).backward()

    return run


def plain_rotary(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def hylab_pieces(c, B: int, T: int) -> list[tuple]:
    """(piece, runs per step, fused-or-current callable, plain callable or None)."""
    from lightning_modules.gpt.fused import relu_squared, rotate_half_pairs
    from lightning_modules.gpt.losses import next_token_loss, softcapped_head_loss
    from lightning_modules.gpt.nets import norm, rotary_tables

    C, H, D, V, cap = c.n_embd, c.n_head, c.n_embd // c.n_head, c.vocab_size, c.logit_softcap
    cos, sin = rotary_tables(D, T, c.rope_base)
    idx, targets = torch.randint(0, V, (B, T)), torch.randint(0, V, (B * T,))
    x, w, wq = (B, T, C), (C, C), (4 * C, C)

    def head_plain(h, weight, y):
        z = h @ weight.t()
        return next_token_loss((cap * torch.tanh(z / cap) if cap else z)[None], y[None])

    def head_no_cap(h, weight, y):
        return next_token_loss((h @ weight.t())[None], y[None])

    return [
        ("embedding + RMSNorm", 1, fwd_bwd(lambda e, i: norm(F.embedding(i, e)), (V, C), ints=[idx]), None),
        ("RMSNorm x2 (pre-attn, pre-MLP)", c.n_layer, fwd_bwd(lambda a: norm(a) + norm(a), x), None),
        ("q, k, v, out projections", c.n_layer, fwd_bwd(lambda a, q, k, v, o: F.linear(a, q) + F.linear(a, k) + F.linear(a, v) + F.linear(a, o), x, w, w, w, w), None),
        ("rotary (q and k)", c.n_layer, fwd_bwd(lambda q, k: rotate_half_pairs(q, cos, sin).sum() + rotate_half_pairs(k, cos, sin).sum(), (B, H, T, D), (B, H, T, D)),
         fwd_bwd(lambda q, k: plain_rotary(q, cos, sin).sum() + plain_rotary(k, cos, sin).sum(), (B, H, T, D), (B, H, T, D))),
        ("QK-norm", c.n_layer, fwd_bwd(lambda q, k: norm(q).sum() + norm(k).sum(), (B, H, T, D), (B, H, T, D)), None),
        ("attention (SDPA, causal)", c.n_layer, fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), (B, H, T, D), (B, H, T, D), (B, H, T, D)), None),
        ("MLP projections", c.n_layer, fwd_bwd(lambda a, f, p: F.linear(F.linear(a, f), p.t()), x, wq, wq), None),
        ("MLP activation ReLU²", c.n_layer, fwd_bwd(relu_squared, (B, T, 4 * C)), fwd_bwd(lambda a: F.relu(a).square(), (B, T, 4 * C))),
        ("head + soft-cap + loss", 1, fwd_bwd(lambda h, weight, y: softcapped_head_loss(h, weight, y, cap), (B * T, C), (V, C), ints=[targets]),
         fwd_bwd(head_plain, (B * T, C), (V, C), ints=[targets])),
        ("  (plain head + loss, no soft-cap)", 1, fwd_bwd(head_no_cap, (B * T, C), (V, C), ints=[targets]), None),
    ]


def baseline_pieces(c, B: int, T: int) -> list[tuple]:
    C, V = c.n_embd, c.vocab_size
    idx, targets, positions = torch.randint(0, V, (B, T)), torch.randint(0, V, (B * T,)), torch.arange(T)
    x, H, D = (B, T, C), c.n_head, c.n_embd // c.n_head

    def layer_norms(a, g, b):
        return F.layer_norm(a, (C,), g, b) + F.layer_norm(a, (C,), g, b)

    return [
        ("token + position embeddings", 1, fwd_bwd(lambda e, p, i: F.embedding(i, e) + F.embedding(positions, p), (V, C), (T, C), ints=[idx]), None),
        ("LayerNorm x2", c.n_layer, fwd_bwd(layer_norms, x, (C,), (C,)), None),
        ("qkv + out projections (bias)", c.n_layer, fwd_bwd(lambda a, w, b, o, ob: F.linear(a, w, b)[..., :C] + F.linear(a, o, ob), x, (3 * C, C), (3 * C,), (C, C), (C,)), None),
        ("attention (SDPA, causal)", c.n_layer, fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), (B, H, T, D), (B, H, T, D), (B, H, T, D)), None),
        ("MLP projections (bias)", c.n_layer, fwd_bwd(lambda a, f, fb, p, pb: F.linear(F.linear(a, f, fb), p.t(), pb), x, (4 * C, C), (4 * C,), (4 * C, C), (C,)), None),
        ("MLP activation GELU", c.n_layer, fwd_bwd(F.gelu, (B, T, 4 * C)), None),
        ("head (tied) + loss", 1, fwd_bwd(lambda h, w, y: F.cross_entropy(h @ w.t(), y), (B * T, C), (V, C), ints=[targets]), None),
    ]


def compiled_contestant(cfg):
    """hylab with model.compile=true: the net compiled (nn.Module.compile), the loss on its logits."""
    from bench.gpt_speed import Contestant, hylab_contestant
    from lightning_modules.gpt.losses import next_token_loss

    eager = hylab_contestant(cfg, 0)
    eager.net.compile()
    return Contestant("hylab compiled", eager.net, eager.optimizer, eager.lr_factor, lambda x, y: next_token_loss(eager.net(x), y))


def whole_steps(cfg, B: int, T: int, compiled: bool = False) -> dict:
    """Forward + backward + optimizer step of each whole net (what the pieces add up to)."""
    from bench.gpt_speed import baseline_contestant, hylab_contestant

    idx, targets = torch.randint(0, cfg.model.net.config.vocab_size, (B, T)), torch.randint(0, cfg.model.net.config.vocab_size, (B, T))
    steps = {}
    contestants = [hylab_contestant(cfg, 0), baseline_contestant(cfg, 0), *([compiled_contestant(cfg)] if compiled else [])]
    for contestant in contestants:
        def step(c=contestant):
            c.loss(idx, targets).backward()
            c.optimizer.step()
            c.optimizer.zero_grad(set_to_none=True)

        def optimizer_only(c=contestant):
            for p in c.net.parameters():
                p.grad = torch.zeros_like(p)
            c.optimizer.step()

        steps[contestant.name] = {"step": step, "optimizer": optimizer_only}
    return steps


def profile_pieces(cfg, repeats: int = 7, compiled: bool = False) -> dict:
    """Median ms per step of every piece, measured in alternation across both nets (and, with
    `compiled`, the whole step of hylab's net under torch.compile, compiled before timing)."""
    c, B, T = cfg.model.net.config, cfg.data.batch_size, cfg.data.sequence_len
    tables = {"hylab": hylab_pieces(c, B, T), "nanoGPT": baseline_pieces(c, B, T)}
    steps = whole_steps(cfg, B, T, compiled)
    calls = [(net, name, count, kind, fn) for net, pieces in tables.items() for name, count, fused, plain in pieces
             for kind, fn in (("now", fused), ("plain", plain)) if fn is not None]
    calls += [(net, f"whole step ({what})", 1, "now", fn) for net, parts in steps.items() for what, fn in
              (("forward + backward + optimizer", parts["step"]), ("optimizer alone", parts["optimizer"]))]
    samples = {(net, name, kind): [] for net, name, _, kind, _ in calls}
    warm_up_ms = {}
    for net, _, _, _, fn in {id(call[4]): call for call in calls}.values():
        started = time.perf_counter()
        fn()  # warm-up (and, for a compiled net, the compilation)
        if "compiled" in net:  # its first call is the whole step, which compiles
            warm_up_ms.setdefault(f"{net} (compile)", (time.perf_counter() - started) * 1000)
    for _ in range(repeats):
        for net, name, count, kind, fn in calls:
            started = time.perf_counter()
            fn()
            samples[(net, name, kind)].append(count * (time.perf_counter() - started) * 1000)
    rows = {}
    for net, name, count, kind, _ in calls:
        rows.setdefault(net, {}).setdefault(name, {"per_step": count})[kind] = statistics.median(samples[(net, name, kind)])
    rows.update({net: {"compile (first step)": {"per_step": 1, "now": compile_ms}} for net, compile_ms in warm_up_ms.items()})
    return rows


def profile_table(rows: dict) -> str:
    lines = []
    for net, pieces in rows.items():
        lines.append(f"{net + ': piece (x runs per step)':<52}{'ms/step':>9}{'plain':>9}")
        for name, r in pieces.items():
            plain = f"{r['plain']:>9.1f}" if "plain" in r else f"{'':>9}"
            lines.append(f"  {name + ' (x' + str(r['per_step']) + ')':<50}{r['now']:>9.1f}{plain}")
        summed = sum(r["now"] for name, r in pieces.items() if not name.startswith(("whole", "  ", "compile")))
        if summed:
            lines.append(f"  {'sum of the pieces (forward + backward)':<50}{summed:>9.1f}")
    return "\n".join(lines)
