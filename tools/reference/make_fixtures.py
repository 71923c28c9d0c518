"""Write the fixtures that the Rust CPU backend is checked against, after self-checks.

    python3 make_fixtures.py --out DIR

For each case: DIR/<case>/config.json, model.safetensors (f32 weights, reference names; tied
models also hold lm_head.weight = wte), expected.safetensors (tokens, logits, loss, grad.<name>).
Weights are drawn in f32 from a seeded generator; the reference runs in float64 on exactly those
f32 values, so the stored answers are the exact answers (rounded to f32) for the stored weights.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import samba_reference as ref

BATCH, SEQ = 2, 13

BASE = dict(n_layer=2, d_model=16, heads=4, kv_heads=2, head_dim=4, mlp_hidden=24, window=4,
            rope_base=10000.0, d_state=4, d_conv=4, expand=2, dt_rank=1, vocab=37,
            tied_embeddings=True, norm_eps=1e-5)
KEY_ORDER = ["layout", "n_layer", "d_model", "heads", "kv_heads", "head_dim", "mlp_hidden",
             "window", "rope_base", "d_state", "d_conv", "expand", "dt_rank", "vocab",
             "tied_embeddings", "norm_eps"]

# (case name, layout, overrides, seed)
CASES = [
    ("samba", "samba", {}, 101),
    ("samba-mha", "samba", dict(heads=2, kv_heads=2), 102),
    ("samba-nope", "samba", dict(rope_base=None), 103),
    ("mamba-swa-mlp", "mamba-swa-mlp", dict(n_layer=1), 104),
    ("mamba-mlp", "mamba-mlp", {}, 105),
    ("mamba", "mamba", {}, 106),
    ("llama", "llama", dict(heads=4, kv_heads=4, tied_embeddings=False), 107),
    ("llama-swa", "llama-swa", dict(heads=4, kv_heads=1), 108),
    ("mlp2-swa-mlp", "mlp2-swa-mlp", {}, 109),
]

F64 = torch.float64
failures = []


def check(name, ok, detail):
    print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    if not ok:
        failures.append(name)


def make_config(layout, overrides):
    cfg = dict(BASE, layout=layout)
    cfg.update(overrides)
    return {k: cfg[k] for k in KEY_ORDER}


def uniform(g, shape, bound):
    return (torch.rand(shape, generator=g, dtype=torch.float32) * 2 - 1) * bound


def init_params(cfg, g):
    """f32 weights with order-one activations (not the training init: nothing scaled down)."""
    out = {}
    for name, shape in ref.param_shapes(cfg).items():
        if name.endswith("wte.weight") or name == "lm_head.weight":
            t = torch.randn(shape, generator=g) * 0.5
        elif len(shape) == 1 and ("norm" in name or "ln_f" in name):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("conv1d.weight"):
            t = uniform(g, shape, math.sqrt(3.0 / shape[-1]))
        elif name.endswith("conv1d.bias"):
            t = uniform(g, shape, 0.5)
        elif name.endswith("dt_proj.weight"):
            t = uniform(g, shape, 0.5)
        elif name.endswith("dt_proj.bias"):
            # softplus^-1(dt) with dt log-uniform in [0.05, 0.5], so the scan decays over a few steps
            dt = torch.exp(uniform(g, shape, 1.0) * 0.5 * math.log(10) + 0.5 * math.log(0.025))
            t = dt + torch.log(-torch.expm1(-dt))
        elif name.endswith("A_log"):
            n = torch.arange(1, shape[1] + 1, dtype=torch.float32)
            t = torch.log(n).expand(shape) + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".D"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 2:
            t = uniform(g, shape, math.sqrt(3.0 / shape[1]))  # unit-variance-preserving
        else:
            raise ValueError(f"no init rule for {name} {shape}")
        out[name] = t.to(torch.float32).contiguous()
    return out


def to64(params32, grad=False):
    return {k: v.to(F64).requires_grad_(grad) for k, v in params32.items()}


# ---------------------------------------------------------------------------------------------
# Self-checks of the reference itself (each against an independent restatement).

def check_conv(g):
    x = torch.randn(2, 9, 6, generator=g, dtype=F64)
    w = torch.randn(6, 1, 4, generator=g, dtype=F64)
    b = torch.randn(6, generator=g, dtype=F64)
    a = ref.causal_conv(x, w, b)
    c = F.conv1d(x.transpose(1, 2), w, b, padding=3, groups=6)[..., :9].transpose(1, 2)
    err = (a - c).abs().max().item()
    check("causal conv == F.conv1d(groups=E)[:L]", err < 1e-13, f"max|diff| {err:.2e}")


def check_scan_parallel(g):
    """Loop scan vs the unrolled closed form
    y_t = sum_{s<=t} (prod_{r=s+1..t} exp(delta_r A)) (delta_s u_s B_s) . C_t + D u_t."""
    Bt, L, E, N = 2, 11, 5, 3
    u = torch.randn(Bt, L, E, generator=g, dtype=F64)
    delta = torch.rand(Bt, L, E, generator=g, dtype=F64) * 0.5 + 0.02
    A = -torch.rand(E, N, generator=g, dtype=F64) * 3 - 0.1
    B = torch.randn(Bt, L, N, generator=g, dtype=F64)
    C = torch.randn(Bt, L, N, generator=g, dtype=F64)
    D = torch.randn(E, generator=g, dtype=F64)
    y = ref.selective_scan(u, delta, A, B, C, D)
    S = torch.cumsum(delta[..., None] * A, dim=1)                      # [Bt, L, E, N]
    diff = S[:, :, None] - S[:, None, :]                               # [Bt, t, s, E, N]
    mask = (torch.arange(L)[None, :] <= torch.arange(L)[:, None])[None, :, :, None, None]
    W = torch.where(mask, torch.exp(torch.where(mask, diff, torch.zeros_like(diff))), 0.0)
    y2 = torch.einsum("btsen,bse,bsn,btn->bte", W, delta * u, B, C) + D * u
    err = (y - y2).abs().max().item()
    check("selective scan loop == unrolled closed form (L=11)", err < 1e-12, f"max|diff| {err:.2e}")


def check_mamba_seq1(cfg, params64, prefix, g):
    """Whole Mamba mixer at sequence length 1 vs its closed form:
    u = silu(b + w[:, 0, K-1] x_in); y = delta u (B.C) + D u; out = (y silu(z)) out_proj^T."""
    p = {k: params64[prefix + k].detach() for k in ref.mixer_shapes("mamba", cfg)}
    E, N, R = cfg["expand"] * cfg["d_model"], cfg["d_state"], cfg["dt_rank"]
    x = torch.randn(3, 1, cfg["d_model"], generator=g, dtype=F64)
    out = ref.mamba(x, p, cfg)
    xz = x[:, 0] @ p["in_proj.weight"].T
    x_in, z = xz[:, :E], xz[:, E:]
    u = F.silu(p["conv1d.bias"] + p["conv1d.weight"][:, 0, -1] * x_in)
    dbl = u @ p["x_proj.weight"].T
    dt, B, C = dbl[:, :R], dbl[:, R:R + N], dbl[:, R + N:]
    delta = F.softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])
    y = delta * u * (B * C).sum(-1, keepdim=True) + p["D"] * u
    out2 = (y * F.silu(z)) @ p["out_proj.weight"].T
    err = (out[:, 0] - out2).abs().max().item()
    check("Mamba mixer at L=1 == closed form", err < 1e-13, f"max|diff| {err:.2e}")


def attention_loop(x, w_attn, w_proj, cfg, window, rope):
    """Per head, per query restatement of the attention (row slicing by hand)."""
    Bt, L, _ = x.shape
    H, G, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    rep, half = H // G, hd // 2
    out = torch.zeros(Bt, L, H * hd, dtype=x.dtype)

    def rows(r):
        return x @ w_attn[r * hd:(r + 1) * hd].T

    def rot(t):
        if rope is None:
            return t
        c, s = rope
        o = t.clone()
        for i in range(half):
            o[..., i] = t[..., i] * c[:, i] - t[..., i + half] * s[:, i]
            o[..., i + half] = t[..., i + half] * c[:, i] + t[..., i] * s[:, i]
        return o

    for h in range(H):
        g, j = divmod(h, rep)
        q = rot(rows(g * (rep + 2) + j))
        k = rot(rows(g * (rep + 2) + rep))
        v = rows(g * (rep + 2) + rep + 1)
        for t in range(L):
            lo = 0 if window is None else max(0, t - window + 1)
            sc = (q[:, t:t + 1] * k[:, lo:t + 1]).sum(-1) / math.sqrt(hd)
            a = torch.softmax(sc, dim=-1)
            out[:, t, h * hd:(h + 1) * hd] = (a[..., None] * v[:, lo:t + 1]).sum(1)
    return out @ w_proj.T


def check_attention(g):
    worst = 0.0
    for H, G in [(4, 2), (2, 2), (4, 1), (4, 4)]:
        for window in (4, None):
            for base in (10000.0, None):
                cfg = dict(heads=H, kv_heads=G, head_dim=4, d_model=16)
                x = torch.randn(2, 10, 16, generator=g, dtype=F64)
                wa = torch.randn((H + 2 * G) * 4, 16, generator=g, dtype=F64) * 0.25
                wp = torch.randn(16, H * 4, generator=g, dtype=F64) * 0.25
                rope = None if base is None else ref.rope_tables(10, 4, base)
                a = ref.attention(x, wa, wp, cfg, window, rope)
                b = attention_loop(x, wa, wp, cfg, window, rope)
                worst = max(worst, (a - b).abs().max().item() / b.abs().max().item())
    check("attention == per-head loop (GQA/MHA/MQA, window/full, RoPE/NoPE)", worst < 1e-13,
          f"max rel diff {worst:.2e}")


def check_rope_tables():
    cos, sin = ref.rope_tables(13, 4, 10000.0)
    # hd 4: theta = [1, 1e-2]; bf16 keeps 8 significant bits
    ok = cos[0].eq(1).all() and sin[0].eq(0).all()
    e1 = (cos[:, 0] - torch.cos(torch.arange(13, dtype=F64))).abs().max().item()
    e2 = (sin[:, 1] - torch.sin(torch.arange(13, dtype=F64) * 0.01)).abs().max().item()
    ok = bool(ok) and e1 < 2 ** -8 and e2 < 2 ** -8 and e1 > 0
    check("RoPE tables: pos 0 identity, bf16-rounded cos/sin", ok,
          f"|cos-exact| {e1:.2e}, |sin-exact| {e2:.2e}")


def reach(cfg):
    """How far ahead a change at token p can reach: None = to the end (Mamba/full attention),
    else the number of positions (k SWA layers, window w: p..p+k(w-1))."""
    kinds = [k for i in range(cfg["n_layer"]) for _, k, _ in ref.sublayers(cfg, i)]
    if "mamba" in kinds or "full" in kinds:
        return None
    return kinds.count("swa") * (cfg["window"] - 1)


def check_dependencies(case, cfg, params64, inputs):
    """Change one input token at p; logits must change exactly at the positions the layout
    allows: t >= p (causal), and t <= p + k(w-1) when only SWA layers mix positions."""
    p64 = {k: v.detach() for k, v in params64.items()}
    with torch.no_grad():
        base = ref.forward(p64, cfg, inputs)
        r = reach(cfg)
        bad = []
        for p in range(SEQ):
            mod = inputs.clone()
            mod[0, p] = (mod[0, p] + 1) % cfg["vocab"]
            new = ref.forward(p64, cfg, mod)
            changed = (new[0] - base[0]).abs().amax(-1) > 1e-12
            want = torch.tensor([t >= p and (r is None or t <= p + r) for t in range(SEQ)])
            if not torch.equal(changed, want):
                bad.append(p)
            if not torch.equal(new[1], base[1]):
                bad.append(("row1", p))
    what = "causal" if r is None else f"window: t in [p, p+{r}]"
    check(f"{case}: token p changes exactly the allowed logits ({what})", not bad,
          f"bad positions {bad}" if bad else f"all {SEQ} positions")


def check_fd(case, cfg, params64, grads, inputs, targets, g):
    """Central differences on the whole loss for a few entries."""
    names = []
    for key in ("A_log", "dt_proj.bias", "attn.attn.weight", "swiglu.w1.weight", "wte.weight"):
        names += [n for n in params64 if n.endswith(key)][:1]
    worst = 0.0
    for n in names:
        idx = tuple(int(torch.randint(s, (1,), generator=g)) for s in params64[n].shape)
        vals = []
        for sgn in (1, -1):
            p = {k: v.detach().clone() for k, v in params64.items()}
            p[n][idx] += sgn * 1e-5
            with torch.no_grad():
                vals.append(ref.loss_fn(ref.forward(p, cfg, inputs), targets).item())
        fd = (vals[0] - vals[1]) / 2e-5
        an = grads[n][idx].item()
        worst = max(worst, abs(fd - an) / max(abs(an), 1e-3))
    check(f"{case}: autograd == finite differences ({len(names)} entries)", worst < 1e-5,
          f"max rel err {worst:.2e}")


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    g = torch.Generator().manual_seed(7)

    print(f"torch {torch.__version__}; batch {BATCH}, seq {SEQ}")
    print("primitive checks:")
    check_conv(g)
    check_scan_parallel(g)
    check_attention(g)
    check_rope_tables()

    rows = []
    for case, layout, overrides, seed in CASES:
        print(f"case {case}:")
        cfg = make_config(layout, overrides)
        gen = torch.Generator().manual_seed(seed)
        params32 = init_params(cfg, gen)
        tokens = torch.randint(cfg["vocab"], (BATCH, SEQ + 1), generator=gen, dtype=torch.int64)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]

        params64 = to64(params32, grad=True)
        logits = ref.forward(params64, cfg, inputs)
        loss = ref.loss_fn(logits, targets)
        loss.backward()
        grads = {k: v.grad.detach() for k, v in params64.items()}

        # self-checks on this case's model
        mamba_prefix = next((f"transformer.h.{i}.{pf}." for i in range(cfg["n_layer"])
                             for _, k, pf in ref.sublayers(cfg, i) if k == "mamba"), None)
        if mamba_prefix is not None:
            check_mamba_seq1(cfg, params64, mamba_prefix, g)
        check_dependencies(case, cfg, params64, inputs)
        check_fd(case, cfg, params64, grads, inputs, targets, g)
        lse = torch.logsumexp(logits.detach(), -1)
        picked = logits.detach().gather(-1, targets[..., None])[..., 0]
        err = abs((lse - picked).mean().item() - loss.item())
        check(f"{case}: loss == mean(logsumexp - logit[target])", err < 1e-13, f"diff {err:.1e}")
        # sensitivity: how much the logits move without the bf16 rounding of the RoPE tables,
        # and without the window (the reference's fallback trap); the Rust tolerance must be tighter
        kinds = {k for i in range(cfg["n_layer"]) for _, k, _ in ref.sublayers(cfg, i)}
        p_det = {k: v.detach() for k, v in params64.items()}
        rope_note = win_note = ""
        with torch.no_grad():
            if cfg["rope_base"] is not None and kinds & {"swa", "full"}:
                l2 = ref.forward(p_det, cfg, inputs, rope_bf16=False)
                rope_note = f"{(l2 - logits.detach()).abs().max().item():.1e}"
            if "swa" in kinds:
                l2 = ref.forward(p_det, dict(cfg, window=10 ** 9), inputs)
                win_note = f"{(l2 - logits.detach()).abs().max().item():.1e}"

        # write
        d = os.path.join(args.out, case)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        model = {k: v.clone() for k, v in params32.items()}
        if cfg["tied_embeddings"]:
            model["lm_head.weight"] = params32["transformer.wte.weight"].clone()
        save_file(model, os.path.join(d, "model.safetensors"))
        expected = {
            "tokens": tokens.clone(),
            "logits": logits.detach().to(torch.float32).contiguous(),
            "loss": loss.detach().to(torch.float32).reshape(1),
        }
        for k, v in grads.items():
            expected["grad." + k] = v.to(torch.float32).contiguous()
        save_file(expected, os.path.join(d, "expected.safetensors"))

        # round trip: reload the files, recompute from the stored f32 weights
        m2, e2 = load_file(os.path.join(d, "model.safetensors")), load_file(os.path.join(d, "expected.safetensors"))
        p2 = {k: m2[k].to(F64) for k in params32}
        with torch.no_grad():
            l3 = ref.forward(p2, cfg, e2["tokens"][:, :-1])
        err = (l3.to(torch.float32) - e2["logits"]).abs().max().item()
        ok = (err < 1e-6 and set(m2) == set(model) and all(m2[k].dtype == torch.float32 for k in m2)
              and (not cfg["tied_embeddings"] or torch.equal(m2["lm_head.weight"], m2["transformer.wte.weight"]))
              and set(e2) == {"tokens", "logits", "loss"} | {"grad." + k for k in params32})
        check(f"{case}: files reload and reproduce the stored logits", ok, f"max|diff| {err:.1e}")

        sizes = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        gmax = max(v.abs().max().item() for v in grads.values())
        gmin_rms = min(v.pow(2).mean().sqrt().item() for v in grads.values())
        rows.append((case, layout, sum(v.numel() for v in params32.values()), loss.item(),
                     logits.detach().std().item(), gmax, gmin_rms, rope_note, win_note, sizes))

    print()
    print(f"{'case':<14} {'layout':<14} {'params':>6} {'loss':>8} {'logit sd':>8} "
          f"{'max|g|':>8} {'min rms g':>9} {'d(rope bf16)':>12} {'d(no window)':>12} {'bytes':>7}")
    for case, layout, n, l, sd, gm, gr, rn, wn, sz in rows:
        print(f"{case:<14} {layout:<14} {n:>6} {l:>8.5f} {sd:>8.3f} {gm:>8.2e} {gr:>9.2e} "
              f"{rn or '-':>12} {wn or '-':>12} {sz:>7}")
    print(f"total fixture bytes: {sum(r[-1] for r in rows)}")
    if failures:
        print(f"SELF-CHECK FAILURES ({len(failures)}): {failures}")
        sys.exit(1)
    print("all self-checks passed")


if __name__ == "__main__":
    main()
