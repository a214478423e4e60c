"""nerfkit's vanilla NeRF train step against a straightforward Flax NeRF, side by side.

The issue's reference figure ("a straightforward Flax version: ~240 rays/s") was measured on this
kind of machine at another time; GEMM throughput here varies by a factor of two between days, so
the only fair comparison is in one process. This script writes that straightforward version (what
one writes from the paper with Flax NNX and optax, no tuning: ``[rays, samples, channels]``
activations, ``nnx.Linear`` layers, ``jnp.searchsorted`` inverse-CDF sampling, a ``cumprod``
compositor, coarse + fine MSE, Adam) and times its jit'd train step interleaved with nerfkit's
(``make_train_step`` on the ``nerf`` family) at the same size: 8x256 trunk with the skip at
layer 5, 128-wide view branch, 64 + 128 samples, L = 10 / 4, on lego rays. When PyTorch is
installed (it is not a nerfkit dependency: ``pip install torch``), the same straightforward
model written in PyTorch (eager, ``torch.optim.Adam``) is timed in the same rounds too. Medians of
``--repeats`` steps after a warm-up (compile) step each; bare GEMM throughput of the moment is
printed for context.

    python benchmarks/nerf_baseline.py --out nerf_baseline.json [--batch-size 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import environment, time_fn, write_json  # sets XLA flags first

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nerfkit.data import load_scene
from nerfkit.data.raysource import PixelSource
from nerfkit.engine.trainer import make_train_step
from nerfkit.engine.run import init_state
from nerfkit.models.nerf import NeRFConfig

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "nerf_synthetic" / "lego"


# --- the straightforward version ----------------------------------------------------------------
def posenc(x, n):
    out = [x]
    for k in range(n):
        out += [jnp.sin(2.0 ** k * x), jnp.cos(2.0 ** k * x)]
    return jnp.concatenate(out, -1)


class Field(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(63 if i == 0 else (256 + 63 if i == 5 else 256), 256,
                                           rngs=rngs)
                                for i in range(8)])
        self.sigma = nnx.Linear(256, 1, rngs=rngs)
        self.feat = nnx.Linear(256, 256, rngs=rngs)
        self.view = nnx.Linear(256 + 27, 128, rngs=rngs)
        self.rgb = nnx.Linear(128, 3, rngs=rngs)

    def __call__(self, x, d):
        ex, ed = posenc(x, 10), posenc(d, 4)
        h = ex
        for i, layer in enumerate(self.layers):
            if i == 5:
                h = jnp.concatenate([h, ex], -1)
            h = jax.nn.relu(layer(h))
        sigma = jax.nn.relu(self.sigma(h)[..., 0])
        h = jax.nn.relu(self.view(jnp.concatenate([self.feat(h), ed], -1)))
        return sigma, jax.nn.sigmoid(self.rgb(h))


class NeRF(nnx.Module):
    def __init__(self, rngs):
        self.coarse, self.fine = Field(rngs), Field(rngs)


def composite(field, o, d, z):
    x = o[:, None] + d[:, None] * z[..., None]
    dirs = jnp.broadcast_to((d / jnp.linalg.norm(d, axis=-1, keepdims=True))[:, None], x.shape)
    sigma, rgb = field(x, dirs)
    delta = jnp.concatenate([z[:, 1:] - z[:, :-1], jnp.full_like(z[:, :1], 1e10)], -1)
    delta = delta * jnp.linalg.norm(d, axis=-1, keepdims=True)
    alpha = 1.0 - jnp.exp(-sigma * delta)
    trans = jnp.cumprod(jnp.concatenate([jnp.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1),
                        -1)[:, :-1]
    w = alpha * trans
    color = jnp.sum(w[..., None] * rgb, 1) + (1.0 - jnp.sum(w, -1, keepdims=True))  # white bg
    return color, w


def sample_pdf(key, bins, weights, n):
    w = weights + 1e-5
    cdf = jnp.cumsum(w / jnp.sum(w, -1, keepdims=True), -1)
    cdf = jnp.concatenate([jnp.zeros_like(cdf[:, :1]), cdf], -1)
    u = jax.random.uniform(key, (bins.shape[0], n))
    idx = jax.vmap(lambda c, uu: jnp.searchsorted(c, uu, side="right"))(cdf, u)
    below, above = jnp.maximum(idx - 1, 0), jnp.minimum(idx, cdf.shape[-1] - 1)
    c0, c1 = jnp.take_along_axis(cdf, below, -1), jnp.take_along_axis(cdf, above, -1)
    b0, b1 = jnp.take_along_axis(bins, below, -1), jnp.take_along_axis(bins, above, -1)
    t = jnp.where(c1 - c0 < 1e-5, 1.0, c1 - c0)
    return b0 + (u - c0) / t * (b1 - b0)


def make_baseline_step(near, far):
    tx = optax.adam(5e-4)

    def loss_fn(model, o, d, target, key):
        k1, k2 = jax.random.split(key)
        t = jnp.linspace(0.0, 1.0, 64)
        z = near + (far - near) * t
        mids = 0.5 * (z[1:] + z[:-1])
        lo, hi = jnp.concatenate([z[:1], mids]), jnp.concatenate([mids, z[-1:]])
        z = lo + (hi - lo) * jax.random.uniform(k1, (o.shape[0], 64))
        c_coarse, w = composite(model.coarse, o, d, z)
        zm = 0.5 * (z[:, 1:] + z[:, :-1])
        z_new = jax.lax.stop_gradient(sample_pdf(k2, zm, w[:, 1:-1], 128))
        z_all = jnp.sort(jnp.concatenate([z, z_new], -1), -1)
        c_fine, _ = composite(model.fine, o, d, z_all)
        return jnp.mean((c_coarse - target) ** 2) + jnp.mean((c_fine - target) ** 2)

    @nnx.jit(donate_argnums=(0, 1))
    def step(model, opt, o, d, target, key):
        loss, grads = nnx.value_and_grad(loss_fn)(model, o, d, target, key)
        opt.update(model, grads)
        return loss

    model = NeRF(nnx.Rngs(0))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    return model, opt, step


def make_torch_step(near, far):
    """The same straightforward NeRF in PyTorch (eager mode), or ``None`` without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    from torch import nn

    def tposenc(x, n):
        return torch.cat([x] + [f(2.0 ** k * x) for k in range(n) for f in (torch.sin, torch.cos)],
                         -1)

    class TField(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(
                [nn.Linear(63 if i == 0 else (256 + 63 if i == 5 else 256), 256) for i in range(8)])
            self.sigma, self.feat = nn.Linear(256, 1), nn.Linear(256, 256)
            self.view, self.rgb = nn.Linear(256 + 27, 128), nn.Linear(128, 3)

        def forward(self, x, d):
            ex, ed = tposenc(x, 10), tposenc(d, 4)
            h = ex
            for i, layer in enumerate(self.layers):
                if i == 5:
                    h = torch.cat([h, ex], -1)
                h = torch.relu(layer(h))
            sigma = torch.relu(self.sigma(h)[..., 0])
            h = torch.relu(self.view(torch.cat([self.feat(h), ed], -1)))
            return sigma, torch.sigmoid(self.rgb(h))

    def tcomposite(field, o, d, z):
        x = o[:, None] + d[:, None] * z[..., None]
        dirs = (d / d.norm(dim=-1, keepdim=True))[:, None].expand_as(x)
        sigma, rgb = field(x, dirs)
        delta = torch.cat([z[:, 1:] - z[:, :-1], torch.full_like(z[:, :1], 1e10)], -1)
        delta = delta * d.norm(dim=-1, keepdim=True)
        alpha = 1.0 - torch.exp(-sigma * delta)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1),
                              -1)[:, :-1]
        w = alpha * trans
        return (w[..., None] * rgb).sum(1) + (1.0 - w.sum(-1, keepdim=True)), w

    def tsample_pdf(bins, weights, n):
        w = weights + 1e-5
        cdf = torch.cumsum(w / w.sum(-1, keepdim=True), -1)
        cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
        u = torch.rand(bins.shape[0], n)
        idx = torch.searchsorted(cdf, u, right=True)
        below = (idx - 1).clamp(min=0)
        above = idx.clamp(max=cdf.shape[-1] - 1)
        c0, c1 = cdf.gather(-1, below), cdf.gather(-1, above)
        b0, b1 = bins.gather(-1, below), bins.gather(-1, above)
        t = torch.where(c1 - c0 < 1e-5, torch.ones_like(c1), c1 - c0)
        return b0 + (u - c0) / t * (b1 - b0)

    torch.manual_seed(0)
    coarse, fine = TField(), TField()
    opt = torch.optim.Adam(list(coarse.parameters()) + list(fine.parameters()), lr=5e-4)

    def step(o, d, target):
        z = near + (far - near) * torch.linspace(0.0, 1.0, 64)
        mids = 0.5 * (z[1:] + z[:-1])
        lo, hi = torch.cat([z[:1], mids]), torch.cat([mids, z[-1:]])
        z = lo + (hi - lo) * torch.rand(o.shape[0], 64)
        c_coarse, w = tcomposite(coarse, o, d, z)
        with torch.no_grad():
            z_new = tsample_pdf(0.5 * (z[:, 1:] + z[:, :-1]), w[:, 1:-1], 128)
        z_all, _ = torch.sort(torch.cat([z, z_new], -1), -1)
        c_fine, _ = tcomposite(fine, o, d, z_all)
        loss = ((c_coarse - target) ** 2).mean() + ((c_fine - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    return step, torch


def gemm_gflops() -> float:
    x = jax.random.normal(jax.random.key(0), (16384, 256))
    w = jax.random.normal(jax.random.key(1), (256, 256))
    f = jax.jit(lambda w, x: x @ w)
    t, _ = time_fn(lambda: f(w, x), repeats=10)
    return 2 * 16384 * 256 * 256 / t / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="nerf_baseline.json")
    ap.add_argument("--data", default=str(LEGO))
    ap.add_argument("--downscale", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    B = args.batch_size

    scene = load_scene(args.data, "train", args.downscale)
    cfg = NeRFConfig(batch_size=B)
    graphdef, state, tx = init_state(cfg, scene, 0)
    source = PixelSource(scene, cfg.background)
    nk_step = make_train_step(graphdef, tx, source, B, False)
    nk_state = [state]

    model, opt, base_step = make_baseline_step(float(scene.near), float(scene.far))
    batch = source.sample(source.data, jax.random.key(1), B)
    o, d, target = batch.rays.origins, batch.rays.directions, batch.rgb

    def run_nerfkit(i):
        nk_state[0], aux = nk_step(nk_state[0], source.data, jax.random.key(i), jnp.float32(5e-4))
        return float(aux["loss"])

    def run_baseline(i):
        return float(base_step(model, opt, o, d, target, jax.random.key(i)))

    runners = {"nerfkit": run_nerfkit, "straightforward_flax": run_baseline}
    torch_step = make_torch_step(float(scene.near), float(scene.far))
    if torch_step is not None:
        t_step, torch = torch_step
        to = [torch.from_numpy(np.asarray(a)) for a in (o, d, target)]
        runners["straightforward_pytorch"] = lambda i: t_step(*to)
    else:
        print("note: PyTorch is not installed; the PyTorch version is not measured")
    compile_s, times, losses = {}, {k: [] for k in runners}, {k: [] for k in runners}
    for name, fn in runners.items():
        t0 = time.perf_counter()
        losses[name].append(fn(0))
        compile_s[name] = time.perf_counter() - t0
    gemm_before = gemm_gflops()
    for i in range(1, args.repeats + 1):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            losses[name].append(fn(i))
            times[name].append(time.perf_counter() - t0)
    gemm_after = gemm_gflops()

    results = {}
    for name in runners:
        med = float(np.median(times[name]))
        results[name] = {"train_rays_per_s": B / med, "step_s": med, "step_s_all": times[name],
                         "first_step_s": compile_s[name], "losses": losses[name]}
    ratio = results["nerfkit"]["train_rays_per_s"] / results["straightforward_flax"]["train_rays_per_s"]
    ratio_torch = (results["nerfkit"]["train_rays_per_s"]
                   / results["straightforward_pytorch"]["train_rays_per_s"]
                   if "straightforward_pytorch" in results else None)
    config = {"batch_size": B, "samples": "64 + 128", "data": args.data,
              "downscale": args.downscale, "repeats": args.repeats,
              "gemm_16384x256x256_gflops": [gemm_before, gemm_after],
              "environment": environment()}
    if torch_step is not None:
        config["torch"] = {"version": torch_step[1].__version__,
                           "threads": torch_step[1].get_num_threads()}
    write_json(args.out, "nerf_baseline", config,
               {**results, "nerfkit_over_baseline": ratio, "nerfkit_over_pytorch": ratio_torch})
    print(f"vanilla NeRF train step, {B} rays, 64 + 128 samples (GEMM 16384x256x256: "
          f"{gemm_before:.0f} / {gemm_after:.0f} GFLOP/s before / after):")
    for name, r in results.items():
        print(f"  {name:22s} {r['train_rays_per_s']:7.1f} rays/s  step {r['step_s']:.2f} s  "
              f"(first step {r['first_step_s']:.1f} s)")
    print(f"  nerfkit / straightforward Flax: {ratio:.2f}x")
    if ratio_torch is not None:
        print(f"  nerfkit / straightforward PyTorch: {ratio_torch:.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
