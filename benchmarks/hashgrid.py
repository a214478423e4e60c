"""Hash-grid encoding throughput: the straightforward JAX version against the optimised one.

    python benchmarks/hashgrid.py --out hashgrid.json [--points N] [--repeats K] [--no-xla-flags]
        [--train-steps S] [--train-data LEGO] [--train-downscale 4] [--train-eval-views 0]

Both implementations run in the same process on the same inputs (uniform random points in the
unit cube, the paper's default grid: 16 levels x 2 features, T = 2**19, N_min 16, N_max 2048).
When the cuda_ext kernel is built (``pip install -e .`` compiles it), its XLA FFI handler for the
current backend is measured side by side too: ``results.ffi_cpu`` (``results.ffi_cuda`` on a GPU).
Each jit'd function is compiled and run once before timing (compile time is reported
separately); then ``--repeats`` rounds run every (implementation, pass) once, interleaved, and the
median per entry is reported: wall-clock time (the headline numbers) and process CPU time (all
threads; steadier than wall-clock when the machine is shared, as the load average in the JSON
shows). Passes, all with respect to the tables (what a NeRF train step differentiates):

* ``fwd``: ``encode(tables, x)``, the ``[P, L*F]`` features.
* ``fwd_bwd``: the encoding's forward and backward, ``jax.vjp``: the features and the tables'
  gradient for ``cot``, a fixed random ``[P, L*F]`` cotangent. This is the encoding's share of a
  train step, where the features are materialised for the MLP and the cotangent comes from it.
* ``fwd_bwd_loss``: ``jax.value_and_grad`` of the scalar ``<encode(tables, x), cot>`` (the
  definition of ``fwd_bwd`` before 2026-11-27). It adds the loss's own cost: XLA:CPU lowers
  the ``vdot`` after a custom call to a materialised 32 MiB product and a reduction (~10-16 ms
  of the kernel path's time at 2^18 points on the 2-core development machine).

With the kernel built, it then measures end-to-end NGP training on lego (200x200, 4096-ray steps,
the default model) with ``--model.backend jax`` and ``ffi``, interleaved step by step after a
warm-up step each (``benchmarks/ngp_backend.py``): ``train`` in the JSON. ``--train-steps 0``
skips it; it is skipped with a note when the dataset is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


PASSES = ("fwd", "fwd_bwd", "fwd_bwd_loss")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="hashgrid.json", help="where to write the JSON results")
    ap.add_argument("--points", type=int, default=1 << 18)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--levels", type=int, default=16)
    ap.add_argument("--features", type=int, default=2)
    ap.add_argument("--log2-table-size", type=int, default=19)
    ap.add_argument("--base-resolution", type=int, default=16)
    ap.add_argument("--max-resolution", type=int, default=2048)
    ap.add_argument(
        "--no-xla-flags",
        action="store_true",
        help="do not apply nerfkit.xla_flags.configure_cpu() (to measure its effect)",
    )
    ap.add_argument("--train-steps", type=int, default=6,
                    help="timed NGP train steps per backend on --train-data (0: skip)")
    ap.add_argument("--train-data", default=None,
                    help="Blender scene for the training measurement (default: shared lego)")
    ap.add_argument("--train-downscale", type=int, default=4,
                    help="image downscale of --train-data (default 4: lego at 200x200)")
    ap.add_argument("--train-eval-views", type=int, default=0,
                    help="after training, test PSNR of each backend on this many views")
    args = ap.parse_args()

    flags_before = os.environ.get("XLA_FLAGS", "")
    if not args.no_xla_flags:
        from nerfkit.xla_flags import configure_cpu  # must run before jax initialises

        configure_cpu()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from nerfkit.core.hashgrid import (
        HashGridConfig,
        hash_encode,
        hash_encode_naive,
        init_hash_tables,
    )

    cfg = HashGridConfig(
        num_levels=args.levels,
        features_per_level=args.features,
        log2_table_size=args.log2_table_size,
        base_resolution=args.base_resolution,
        max_resolution=args.max_resolution,
    )
    n = args.points
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    tables = init_hash_tables(k1, cfg)
    x = jax.random.uniform(k2, (n, 3), jnp.float32)
    cot = jax.random.normal(k3, (n, cfg.output_dim), jnp.float32)

    impls = {"jax_naive": hash_encode_naive, "jax": hash_encode}
    # The cuda_ext kernel (XLA FFI) for this backend, side by side, when it is built.
    from nerfkit.nn import ffi_backend

    ffi_name = "ffi_cuda" if jax.default_backend() == "gpu" else "ffi_cpu"
    if ffi_backend.available():
        impls[ffi_name] = ffi_backend.hash_encode_ffi
    else:
        print(f"note: {ffi_name} not measured, the cuda_ext kernel is not built: "
              f"{ffi_backend.BUILD_HINT}")
    fns, compile_s = {}, {}
    for name, enc in impls.items():
        fwd = jax.jit(lambda t, x, enc=enc: enc(t, x, cfg))
        def fwd_vjp(t, x, c, enc=enc):
            out, pullback = jax.vjp(lambda t: enc(t, x, cfg), t)
            return out, pullback(c)[0]

        fwd_bwd = jax.jit(fwd_vjp)
        fwd_bwd_loss = jax.jit(
            jax.value_and_grad(lambda t, x, c, enc=enc: jnp.vdot(enc(t, x, cfg), c))
        )
        compile_s[name] = {}
        for pname, fn, a in (("fwd", fwd, (tables, x)), ("fwd_bwd", fwd_bwd, (tables, x, cot)),
                             ("fwd_bwd_loss", fwd_bwd_loss, (tables, x, cot))):
            t0 = time.perf_counter()
            compiled = fn.lower(*a).compile()
            compile_s[name][pname] = time.perf_counter() - t0
            jax.block_until_ready(compiled(*a))  # warm-up, excluded
            fns[(name, pname)] = (compiled, a)

    # Sanity: both implementations agree on this input.
    ref = fns[("jax_naive", "fwd")][0](tables, x)
    opt = fns[("jax", "fwd")][0](tables, x)
    max_abs_diff = float(jnp.max(jnp.abs(ref - opt)))
    max_abs_diff_ffi = max_abs_diff_grad_ffi = None
    if ffi_name in impls:
        max_abs_diff_ffi = float(jnp.max(jnp.abs(ref - fns[(ffi_name, "fwd")][0](tables, x))))
        g_ref = fns[("jax", "fwd_bwd")][0](tables, x, cot)[1]
        g_ffi = fns[(ffi_name, "fwd_bwd")][0](tables, x, cot)[1]
        max_abs_diff_grad_ffi = float(jnp.max(jnp.abs(g_ref - g_ffi)))
        del g_ref, g_ffi
    del ref, opt

    times = {key: [] for key in fns}
    cpu = {key: [] for key in fns}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for key, (fn, a) in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(fn(*a))
            times[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
    load_after = os.getloadavg()

    results = {}
    for name in impls:
        r = {}
        for pname in PASSES:
            med = float(np.median(times[(name, pname)]))
            r[f"{pname}_points_per_s"] = n / med
            r[f"{pname}_ms"] = med * 1e3
            r[f"{pname}_ms_all"] = [t * 1e3 for t in times[(name, pname)]]
            r[f"{pname}_cpu_ms"] = float(np.median(cpu[(name, pname)])) * 1e3
        r["compile_s"] = compile_s[name]
        results[name] = r
    speedup = {
        p: results["jax"][f"{p}_points_per_s"] / results["jax_naive"][f"{p}_points_per_s"]
        for p in PASSES
    }

    speedup_ffi = None
    if ffi_name in results:
        speedup_ffi = {
            p: results[ffi_name][f"{p}_points_per_s"] / results["jax"][f"{p}_points_per_s"]
            for p in PASSES
        }

    out = {
        "benchmark": "hashgrid",
        "config": {
            "points": n,
            "repeats": args.repeats,
            "num_levels": cfg.num_levels,
            "features_per_level": cfg.features_per_level,
            "log2_table_size": cfg.log2_table_size,
            "base_resolution": cfg.base_resolution,
            "max_resolution": cfg.max_resolution,
            "table_entries": cfg.total_entries,
            "inputs": "uniform random points in [0,1]^3",
            "passes": {
                "fwd": "encode(tables, x)",
                "fwd_bwd": "jax.vjp wrt tables: features and the tables' gradient for a fixed "
                           "random cotangent",
                "fwd_bwd_loss": "jax.value_and_grad wrt tables of vdot(encode(tables, x), cot)",
            },
        },
        "results": results,
        "speedup": speedup,
        "speedup_ffi": speedup_ffi,
        "max_abs_diff": max_abs_diff,
        "max_abs_diff_ffi": max_abs_diff_ffi,
        "max_abs_diff_grad_ffi": max_abs_diff_grad_ffi,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "load_average_1min": [load_before[0], load_after[0]],
        "platform": platform.platform(),
        "jax_version": jax.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "XLA_FLAGS_before_configure_cpu": flags_before,
    }
    train = None
    if ffi_name in results and args.train_steps > 0:
        import ngp_backend  # this folder; sets nothing new (the XLA flags are already applied)

        data = args.train_data or str(ngp_backend.LEGO)
        if os.path.isdir(data):
            train = ngp_backend.measure_training(data, downscale=args.train_downscale,
                                                 steps=args.train_steps,
                                                 eval_views=args.train_eval_views)
        else:
            print(f"note: end-to-end training not measured, no dataset at {data}")
    out["train"] = train
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)

    print(f"hash grid: {n} points, L={cfg.num_levels} F={cfg.features_per_level} "
          f"T=2^{cfg.log2_table_size} N={cfg.base_resolution}..{cfg.max_resolution}, "
          f"median of {args.repeats}, {jax.devices()[0]}, XLA_FLAGS={out['XLA_FLAGS']!r}")
    print(f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'impl':10s} {'fwd Mpts/s':>11s} {'ms':>7s} {'(cpu)':>7s} "
          f"{'fwd+bwd Mpts/s':>15s} {'ms':>7s} {'(cpu)':>7s} "
          f"{'fwd+bwd+loss Mpts/s':>20s} {'ms':>7s} {'(cpu)':>7s} {'compile s':>10s}")
    for name, r in results.items():
        row = f"{name:10s}"
        for pname, width in (("fwd", 11), ("fwd_bwd", 15), ("fwd_bwd_loss", 20)):
            row += (f" {r[f'{pname}_points_per_s'] / 1e6:{width}.3f} {r[f'{pname}_ms']:7.1f}"
                    f" {r[f'{pname}_cpu_ms']:7.1f}")
        print(row + f" {sum(r['compile_s'].values()):10.2f}")
    print(f"speedup jax / jax_naive: fwd {speedup['fwd']:.2f}x, fwd+bwd {speedup['fwd_bwd']:.2f}x, "
          f"fwd+bwd+loss {speedup['fwd_bwd_loss']:.2f}x (max |diff| {max_abs_diff:.2e}); "
          f"wrote {args.out}")
    if ffi_name in results:
        sf = out["speedup_ffi"]
        print(f"speedup {ffi_name} / jax: fwd {sf['fwd']:.2f}x, fwd+bwd {sf['fwd_bwd']:.2f}x, "
              f"fwd+bwd+loss {sf['fwd_bwd_loss']:.2f}x "
              f"(max |diff| vs jax_naive {max_abs_diff_ffi:.2e}, tables' gradient vs jax "
              f"{max_abs_diff_grad_ffi:.2e})")
    if train is not None:
        ngp_backend.print_training(train)


if __name__ == "__main__":
    main()
