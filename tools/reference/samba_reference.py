"""Independent reference of the Samba model family, in plain PyTorch.

Written from /work/shared/SPEC.md alone (no Rust from this repository, no code from
microsoft/Samba or the mamba repositories). Meant for float64 on the CPU: clarity over speed.
Gradients come from autograd.

Parameters are a flat dict {reference name: tensor}; the config is the dict stored in
config.json (see README.md).
"""
import math

import torch
import torch.nn.functional as F

LAYOUTS = ("samba", "mamba-swa-mlp", "mamba-mlp", "mamba", "llama", "llama-swa", "mlp2-swa-mlp")


# ---------------------------------------------------------------------------------------------
# Layout: which sublayers each block has, and the parameter names/shapes.

def sublayers(cfg, i):
    """Sublayers of block i as (norm name, kind, parameter prefix), applied in order as
    x = x + kind(RMSNorm_norm(x)). kind is mamba | swa | full | mlp | mlp2."""
    layout = cfg["layout"]
    mlp = ("norm_2", "mlp", "mlp.swiglu")
    if layout == "samba":
        return [("norm_1", "mamba" if i % 2 == 0 else "swa", "attn"), mlp]
    if layout == "mamba-swa-mlp":
        return [("norm_m", "mamba", "mb"), ("norm_attn", "swa", "attn"), mlp]
    if layout == "mamba-mlp":
        return [("norm_1", "mamba", "attn"), mlp]
    if layout == "mamba":
        return [("norm", "mamba", "mixer")]
    if layout == "llama":
        return [("norm_1", "full", "attn"), mlp]
    if layout == "llama-swa":
        return [("norm_1", "swa", "attn"), mlp]
    if layout == "mlp2-swa-mlp":
        if i % 2 == 0:
            return [("norm_1", "mlp2", "attn.swiglu"), mlp]
        return [("norm_1", "swa", "attn"), mlp]
    raise ValueError(f"unknown layout {layout!r}")


def mixer_shapes(kind, cfg):
    d = cfg["d_model"]
    if kind == "mamba":
        E, N, K, R = cfg["expand"] * d, cfg["d_state"], cfg["d_conv"], cfg["dt_rank"]
        return {
            "in_proj.weight": (2 * E, d),
            "conv1d.weight": (E, 1, K),
            "conv1d.bias": (E,),
            "x_proj.weight": (R + 2 * N, E),
            "dt_proj.weight": (E, R),
            "dt_proj.bias": (E,),
            "A_log": (E, N),
            "D": (E,),
            "out_proj.weight": (d, E),
        }
    if kind in ("swa", "full"):
        H, G, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
        return {"attn.weight": ((H + 2 * G) * hd, d), "proj.weight": (d, H * hd)}
    if kind in ("mlp", "mlp2"):
        hid = cfg["mlp_hidden"] if kind == "mlp" else 2 * d
        return {"w1.weight": (hid, d), "w2.weight": (hid, d), "w3.weight": (d, hid)}
    raise ValueError(kind)


def param_shapes(cfg):
    """Ordered {name: shape} of every trainable parameter (tied models: no lm_head.weight)."""
    d, V = cfg["d_model"], cfg["vocab"]
    shapes = {"transformer.wte.weight": (V, d)}
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}."
        for norm, kind, prefix in sublayers(cfg, i):
            shapes[pre + norm + ".weight"] = (d,)
            for k, s in mixer_shapes(kind, cfg).items():
                shapes[pre + prefix + "." + k] = s
    shapes["transformer.ln_f.weight"] = (d,)
    if not cfg["tied_embeddings"]:
        shapes["lm_head.weight"] = (V, d)
    return shapes


# ---------------------------------------------------------------------------------------------
# Primitives.

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def swiglu(x, w1, w2, w3):
    return (F.silu(x @ w1.T) * (x @ w2.T)) @ w3.T


def softplus20(v):
    """softplus(v) = log(1 + exp(v)), and v itself where v > 20."""
    return torch.where(v > 20, v, torch.log1p(torch.exp(torch.clamp(v, max=20.0))))


def causal_conv(x, w, b):
    """Depthwise causal conv with zero left padding. x [B, L, E], w [E, 1, K], b [E]:
    out[t, c] = b[c] + sum_k w[c, 0, k] * x[t - (K-1) + k, c]."""
    K, L = w.shape[-1], x.shape[1]
    xp = F.pad(x, (0, 0, K - 1, 0))  # pad the time axis on the left with K-1 zero rows
    out = b
    for k in range(K):
        out = out + w[:, 0, k] * xp[:, k:k + L, :]
    return out


def selective_scan(u, delta, A, B, C, D):
    """Explicit recurrence from h_0 = 0. u, delta [Bt, L, E]; A [E, N]; B, C [Bt, L, N]; D [E].
    h_t = exp(delta_t * A) * h_{t-1} + (delta_t * u_t) outer B_t;  y_t = h_t . C_t + D * u_t."""
    Bt, L, E = u.shape
    h = u.new_zeros(Bt, E, A.shape[1])
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, t, :, None] * A)
        h = dA * h + (delta[:, t, :, None] * u[:, t, :, None]) * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    return torch.stack(ys, dim=1)


def mamba(x, p, cfg):
    """Mamba-1 mixer. p maps the local names (in_proj.weight, ...) to tensors."""
    E, N, R = cfg["expand"] * cfg["d_model"], cfg["d_state"], cfg["dt_rank"]
    xz = x @ p["in_proj.weight"].T
    x_in, z = xz[..., :E], xz[..., E:]
    u = F.silu(causal_conv(x_in, p["conv1d.weight"], p["conv1d.bias"]))
    x_dbl = u @ p["x_proj.weight"].T
    dt_low, Bm, Cm = x_dbl[..., :R], x_dbl[..., R:R + N], x_dbl[..., R + N:R + 2 * N]
    delta = softplus20(dt_low @ p["dt_proj.weight"].T + p["dt_proj.bias"])
    A = -torch.exp(p["A_log"])
    y = selective_scan(u, delta, A, Bm, Cm, p["D"])
    return (y * F.silu(z)) @ p["out_proj.weight"].T


def rope_tables(L, hd, base, bf16=True):
    """cos/sin [L, hd/2] as the reference builds them: theta_i = 1/base^(2i/hd) and angles
    pos * theta in f32, cos/sin in f32, then rounded to bf16 (bf16=True); returned as float64."""
    theta = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.outer(torch.arange(L, dtype=torch.float32), theta)
    cos, sin = torch.cos(ang), torch.sin(ang)
    if bf16:
        cos, sin = cos.to(torch.bfloat16), sin.to(torch.bfloat16)
    return cos.to(torch.float64), sin.to(torch.float64)


def apply_rope(x, cos, sin):
    """NeoX half split over the whole head dim. x [B, L, heads, hd]; cos/sin [L, hd/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def attention(x, w_attn, w_proj, cfg, window, rope):
    """Causal attention; window=None means full causal, else query t sees keys
    max(0, t-window+1)..t. rope is (cos, sin) or None (NoPE)."""
    Bt, L, _ = x.shape
    H, G, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    rep = H // G
    qkv = (x @ w_attn.T).view(Bt, L, G, rep + 2, hd)     # grouped-interleaved rows
    q = qkv[:, :, :, :rep, :].reshape(Bt, L, H, hd)      # head h = g * rep + j
    k = qkv[:, :, :, rep, :]                             # [Bt, L, G, hd]
    v = qkv[:, :, :, rep + 1, :]
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    k = k.repeat_interleave(rep, dim=2)                  # query head h uses kv group h // rep
    v = v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd)
    t = torch.arange(L)[:, None]
    s = torch.arange(L)[None, :]
    allowed = s <= t
    if window is not None:
        allowed = allowed & (s > t - window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    y = torch.einsum("bhts,bshd->bthd", att, v).reshape(Bt, L, H * hd)
    return y @ w_proj.T


# ---------------------------------------------------------------------------------------------
# Whole model.

def run_mixer(kind, h, params, prefix, cfg, rope):
    p = {k: params[prefix + k] for k in mixer_shapes(kind, cfg)}
    if kind == "mamba":
        return mamba(h, p, cfg)
    if kind == "swa":
        return attention(h, p["attn.weight"], p["proj.weight"], cfg, cfg["window"], rope)
    if kind == "full":
        return attention(h, p["attn.weight"], p["proj.weight"], cfg, None, rope)
    return swiglu(h, p["w1.weight"], p["w2.weight"], p["w3.weight"])  # mlp, mlp2


def forward(params, cfg, tokens, rope_bf16=True):
    """tokens [B, L] (int64) -> logits [B, L, vocab], in the dtype of the parameters."""
    L = tokens.shape[1]
    rope = None
    if cfg["rope_base"] is not None:
        rope = rope_tables(L, cfg["head_dim"], float(cfg["rope_base"]), bf16=rope_bf16)
    x = params["transformer.wte.weight"][tokens]
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}."
        for norm, kind, prefix in sublayers(cfg, i):
            h = rms_norm(x, params[pre + norm + ".weight"], cfg["norm_eps"])
            x = x + run_mixer(kind, h, params, pre + prefix + ".", cfg, rope)
    x = rms_norm(x, params["transformer.ln_f.weight"], cfg["norm_eps"])
    head = params["transformer.wte.weight"] if cfg["tied_embeddings"] else params["lm_head.weight"]
    return x @ head.T


def loss_fn(logits, targets):
    """Mean cross-entropy over all batch * seq next-token targets."""
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="mean")
