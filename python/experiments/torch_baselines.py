"""Differentiable PyTorch stand-ins for vla_torch's two baseline operators, for training on CUDA
tensors until their CUDA backward is built (vla_torch raises an error for it today).

They compute docs/maths.md §7 — linear attention S ← S + v kᵀ, z ← z + k, o = S q / max(zᵀq, ε);
DeltaNet k̂ = k/‖k‖, S ← S + β (v − S k̂) k̂ᵀ, o = S q — chunk by chunk (C tokens), the state carried
between chunks, so autograd gives the gradients. They are a second evaluation of those recurrences
and exist only for the experiments: `check_against_operator` compares them with vla_torch's own
operators (forward and every input's gradient, float64 on the CPU), python/tests runs it, and the
MQAR experiment runs it again and records the errors beside its results.

Within a chunk, with S_c, z_c the state before it and every row a token t of the chunk:
- linear attention: S_t q_t = S_c q_t + Σ_{s≤t} (k_sᵀ q_t) v_s and z_tᵀ q_t = z_cᵀ q_t + Σ_{s≤t} k_sᵀ q_t,
  so O = (Q S_cᵀ + tril(Q Kᵀ) V) / max(Q z_c + rowsum(tril(Q Kᵀ)), ε); then S += Vᵀ K, z += Σ K.
- DeltaNet: e_t = β_t (v_t − S_{t−1} k̂_t) with S_{t−1} = S_c + Σ_{s<t} e_s k̂_sᵀ, i.e.
  e_t + β_t Σ_{s<t} (k̂_tᵀ k̂_s) e_s = β_t (v_t − S_c k̂_t): a unit lower-triangular system
  (I + diag(β) tril₋(K̂ K̂ᵀ)) E = diag(β)(V − K̂ S_cᵀ); then O = Q S_cᵀ + tril(Q K̂ᵀ) E and S += Eᵀ K̂.
Only what the experiments need: no initial state, no cu_seqlens (errors say so).
"""
import torch

CHUNK = 64


def _heads_first(*xs):
    return [x.transpose(1, 2) for x in xs]  # [B, T, H, d] -> [B, H, T, d]


def linear_attention(q, k, v, initial_state=None, cu_seqlens=None, config=None, chunk=CHUNK):
    if initial_state is not None or cu_seqlens is not None:
        raise ValueError("torch_baselines.linear_attention: no initial state or cu_seqlens here")
    eps = config.denom_eps if config is not None else 1e-4
    normalize = config.normalize_output if config is not None else True
    Q, K, V = _heads_first(q, k, v)
    B, H, T, dk = Q.shape
    S = Q.new_zeros(B, H, V.shape[-1], dk)
    z = Q.new_zeros(B, H, dk)
    outs = []
    for c0 in range(0, T, chunk):
        Qc, Kc, Vc = Q[:, :, c0:c0 + chunk], K[:, :, c0:c0 + chunk], V[:, :, c0:c0 + chunk]
        sc = torch.tril(Qc @ Kc.transpose(-1, -2))
        num = Qc @ S.transpose(-1, -2) + sc @ Vc
        if normalize:
            den = (Qc @ z.unsqueeze(-1)).squeeze(-1) + sc.sum(-1)
            num = num / torch.clamp(den, min=eps).unsqueeze(-1)
        outs.append(num)
        S = S + Vc.transpose(-1, -2) @ Kc
        z = z + Kc.sum(-2)
    return torch.cat(outs, 2).transpose(1, 2), (S, z)


def deltanet(q, k, v, beta, initial_state=None, cu_seqlens=None, config=None, chunk=CHUNK):
    if initial_state is not None or cu_seqlens is not None:
        raise ValueError("torch_baselines.deltanet: no initial state or cu_seqlens here")
    Q, K, V = _heads_first(q, k, v)
    Bt = beta.transpose(1, 2)  # [B, H, T]
    K = torch.nn.functional.normalize(K, dim=-1)  # ‖k‖ = 0 gives k̂ = 0: the step writes nothing
    B, H, T, dk = Q.shape
    S = Q.new_zeros(B, H, V.shape[-1], dk)
    outs = []
    for c0 in range(0, T, chunk):
        Qc, Kc, Vc, bc = Q[:, :, c0:c0 + chunk], K[:, :, c0:c0 + chunk], V[:, :, c0:c0 + chunk], Bt[:, :, c0:c0 + chunk]
        n = Qc.shape[2]
        low = torch.tril(Kc @ Kc.transpose(-1, -2), diagonal=-1) * bc.unsqueeze(-1)
        rhs = bc.unsqueeze(-1) * (Vc - Kc @ S.transpose(-1, -2))
        eye = torch.eye(n, dtype=Q.dtype, device=Q.device)
        E = torch.linalg.solve_triangular(eye + low, rhs, upper=False, unitriangular=True)
        outs.append(Qc @ S.transpose(-1, -2) + torch.tril(Qc @ Kc.transpose(-1, -2)) @ E)
        S = S + E.transpose(-1, -2) @ Kc
    return torch.cat(outs, 2).transpose(1, 2), S


def check_against_operator(B=2, T=150, H=3, d=16, seed=0):
    """Max relative error (‖x − ref‖/max(‖ref‖, 1)) of the stand-ins' outputs and gradients against
    vla_torch's operators, float64 on the CPU, T crossing chunk boundaries. Returns a dict. (The
    floor: at T = 1 linear attention's o = v does not depend on q or k, whose gradients are then
    rounding noise around 0 in both.)"""
    import vla_torch

    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    q, k, v = rnd(B, T, H, d).exp() * 0.5, rnd(B, T, H, d).exp() * 0.5, rnd(B, T, H, d)  # positive q, k: ELU + 1 features
    kd, beta = rnd(B, T, H, d), torch.rand(B, T, H, generator=g, dtype=torch.float64) * 0.9 + 0.05
    w = rnd(B, T, H, d)
    rel = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1.0)).item()
    out = {}
    cfg = vla_torch.Config(denom_eps=1e-6)
    for name, f_ref, f_new, args in (
            ("linear", lambda *a: vla_torch.linear_attention(*a, config=cfg)[0],
             lambda *a: linear_attention(*a, config=cfg)[0], (q, k, v)),
            ("deltanet", lambda *a: vla_torch.deltanet(*a)[0], lambda *a: deltanet(*a)[0], (q, kd, v, beta))):
        res = []
        for f in (f_ref, f_new):
            xs = [a.clone().requires_grad_(True) for a in args]
            o = f(*xs)
            grads = torch.autograd.grad((o * w).sum(), xs)
            res.append((o.detach(), grads))
        out[name] = max([rel(res[1][0], res[0][0])] + [rel(a, b) for a, b in zip(res[1][1], res[0][1])])
    return out
