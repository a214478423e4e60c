// XLA FFI CUDA handlers of the multiresolution hash-grid encoding (nerfkit); same targets,
// operands and attributes as hashgrid_cpu.cc (see there), registered for platform "CUDA".
//
//   forward:        one thread per (point, level), level fastest, so that a warp's stores of
//                   the [P, L*F] output are coalesced;
//   d/d tables:     same mapping, atomicAdd of w_k * g into the corner rows (after a memset),
//                   one float2 atomic per row at F = 2 on compute capability >= 9.0;
//                   replacing XLA:GPU's float32 scatter-add, reported very slow in jaxlib
//                   0.10.2 .. 0.11.0 (JAX issue #38806; not seen with 0.11.2 on an H100);
//   d/d x:          one thread per point, levels in a loop (no conflicts).
// Everything runs on XLA's stream; no synchronisation, no host round trip.

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "hashgrid_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using nerfkit_hg::Level;

namespace {

using I64Span = ffi::Span<const int64_t>;
using F32Buf = ffi::Buffer<ffi::F32>;

struct Levels {
  Level lv[nerfkit_hg::kMaxLevels];  // passed by value as a kernel parameter (< 4 KiB)
  int count;
};

ffi::Error MakeLevels(I64Span res, I64Span offsets, I64Span sizes, I64Span hashed,
                      int64_t log2_t, int64_t rows, Levels& out) {
  const size_t L = res.size();
  if (L == 0 || L > static_cast<size_t>(nerfkit_hg::kMaxLevels) || offsets.size() != L ||
      sizes.size() != L || hashed.size() != L)
    return ffi::Error::InvalidArgument("hash grid: inconsistent level attributes");
  if (log2_t < 1 || log2_t > 30) return ffi::Error::InvalidArgument("hash grid: bad log2_table_size");
  const int64_t t = int64_t{1} << log2_t;
  int64_t expect = 0;
  for (size_t l = 0; l < L; ++l) {
    const int64_t n = res[l];
    const int64_t verts = (n + 1) * (n + 1) * (n + 1);
    const bool h = hashed[l] != 0;
    if (n < 1 || offsets[l] != expect || sizes[l] != (h ? t : verts) || (!h && verts > t))
      return ffi::Error::InvalidArgument("hash grid: level " + std::to_string(l) +
                                         " attributes do not match the table layout");
    expect += sizes[l];
    Level& lv = out.lv[l];
    lv.res = static_cast<float>(n);
    lv.hashed = h;
    lv.mult1 = h ? nerfkit_hg::kPrime1 : static_cast<uint32_t>(n + 1);
    lv.mult2 = h ? nerfkit_hg::kPrime2 : static_cast<uint32_t>((n + 1) * (n + 1));
    lv.mask = static_cast<uint32_t>(t - 1);
    lv.offset = offsets[l];
  }
  out.count = static_cast<int>(L);
  if (expect != rows)
    return ffi::Error::InvalidArgument("hash grid: table has " + std::to_string(rows) +
                                       " rows, the config needs " + std::to_string(expect));
  return ffi::Error::Success();
}

__device__ __forceinline__ void Corners(const Level& lv, const float* xp, int64_t rows[8],
                                        float w[8], float frac[3]) {
  // Both index modes, selected per thread: a warp spans several levels.
  int64_t hashed_rows[8];
  nerfkit_hg::corners<true>(lv, xp, hashed_rows, w, frac);
  nerfkit_hg::corners<false>(lv, xp, rows, w, frac);
  if (lv.hashed) {
#pragma unroll
    for (int k = 0; k < 8; ++k) rows[k] = hashed_rows[k];
  }
}

// Thread t handles point t / L at level t % L: consecutive threads read and write consecutive
// F-vectors of the [P, L*F] features (coalesced), and the per-level constants come from shared
// memory (threads of a warp read different levels).
__device__ __forceinline__ bool PointLevel(const Levels& levels, Level* s_lv, int64_t np,
                                           int64_t& p, int& l) {
  if (threadIdx.x < levels.count) s_lv[threadIdx.x] = levels.lv[threadIdx.x];
  __syncthreads();
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  p = t / levels.count;
  l = static_cast<int>(t - p * levels.count);
  return p < np;
}

template <int kF>
__device__ __forceinline__ void AddRow(float* d, int F, const float* r, float w) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (kF == 2) {  // one vector atomic instead of two (compute capability 9.x)
    atomicAdd(reinterpret_cast<float2*>(d), make_float2(w * r[0], w * r[1]));
  } else
#endif
  {
    for (int f = 0; f < F; ++f) atomicAdd(d + f, w * r[f]);
  }
}

// kF > 0: compile-time feature width; kF == 0: runtime width fdim (<= 16).
template <int kF>
__global__ void FwdKernel(Levels levels, int fdim, const float* __restrict__ tab,
                          const float* __restrict__ x, float* __restrict__ out, int64_t np) {
  __shared__ Level s_lv[nerfkit_hg::kMaxLevels];
  int64_t p;
  int l;
  if (!PointLevel(levels, s_lv, np, p, l)) return;
  const int F = kF > 0 ? kF : fdim;
  const Level lv = s_lv[l];
  int64_t rows[8];
  float w[8], frac[3];
  Corners(lv, x + 3 * p, rows, w, frac);
  float acc[kF > 0 ? kF : 16];
  for (int f = 0; f < F; ++f) acc[f] = 0.0f;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float* v = tab + rows[k] * F;
    for (int f = 0; f < F; ++f) acc[f] += w[k] * __ldg(v + f);
  }
  float* o = out + (p * levels.count + l) * F;
  for (int f = 0; f < F; ++f) o[f] = acc[f];
}

template <int kF>
__global__ void BwdTablesKernel(Levels levels, int fdim, const float* __restrict__ x,
                                const float* __restrict__ g, float* __restrict__ dtab,
                                int64_t np) {
  __shared__ Level s_lv[nerfkit_hg::kMaxLevels];
  int64_t p;
  int l;
  if (!PointLevel(levels, s_lv, np, p, l)) return;
  const int F = kF > 0 ? kF : fdim;
  const Level lv = s_lv[l];
  int64_t rows[8];
  float w[8], frac[3];
  Corners(lv, x + 3 * p, rows, w, frac);
  float gl[kF > 0 ? kF : 16];
  const float* gp = g + (p * levels.count + l) * F;
  for (int f = 0; f < F; ++f) gl[f] = gp[f];
#pragma unroll
  for (int k = 0; k < 8; ++k) AddRow<kF>(dtab + rows[k] * F, F, gl, w[k]);
}

// One thread per point, levels in a loop (the three sums stay in registers, no atomics).
template <int kF>
__global__ void BwdXKernel(Levels levels, int fdim, const float* __restrict__ tab,
                           const float* __restrict__ x, const float* __restrict__ g,
                           float* __restrict__ dx, int64_t np) {
  __shared__ Level s_lv[nerfkit_hg::kMaxLevels];
  if (threadIdx.x < levels.count) s_lv[threadIdx.x] = levels.lv[threadIdx.x];
  __syncthreads();
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= np) return;
  const int F = kF > 0 ? kF : fdim;
  float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f;
  for (int l = 0; l < levels.count; ++l) {
    const Level lv = s_lv[l];
    int64_t rows[8];
    float w[8], frac[3], gv[8], dfrac[3];
    if (lv.hashed)
      nerfkit_hg::corners<true>(lv, x + 3 * p, rows, w, frac);
    else
      nerfkit_hg::corners<false>(lv, x + 3 * p, rows, w, frac);
    const float* gp = g + (p * levels.count + l) * F;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float* v = tab + rows[k] * F;
      float s = 0.0f;
      for (int f = 0; f < F; ++f) s += gp[f] * __ldg(v + f);
      gv[k] = s;
    }
    nerfkit_hg::accumulate_dfrac(frac, gv, dfrac);
    d0 += lv.res * dfrac[0];
    d1 += lv.res * dfrac[1];
    d2 += lv.res * dfrac[2];
  }
  dx[3 * p + 0] = d0;
  dx[3 * p + 1] = d1;
  dx[3 * p + 2] = d2;
}

constexpr int kThreads = 256;

ffi::Error LaunchStatus(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return ffi::Error::Internal(std::string("hash grid CUDA ") + what + ": " +
                                cudaGetErrorString(err));
  return ffi::Error::Success();
}

ffi::Error CheckF(int64_t f) {
  if (f < 1 || f > 16)
    return ffi::Error::InvalidArgument("hash grid: features_per_level must be in [1, 16]");
  return ffi::Error::Success();
}

// [P, L*F] check of the output / cotangent.
ffi::Error CheckFeatures(ffi::Span<const int64_t> d, int64_t np, int L, int64_t f) {
  if (d.size() != 2 || d[0] != np || d[1] != L * f)
    return ffi::Error::InvalidArgument("hash grid: features must be [P, L*F]");
  return ffi::Error::Success();
}

ffi::Error GridFor(int64_t threads, dim3& grid) {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return ffi::Error::InvalidArgument("hash grid: too many points");
  grid = dim3(static_cast<unsigned>(blocks));
  return ffi::Error::Success();
}

#define NERFKIT_DISPATCH_F(F, KERNEL, GRID, STREAM, ...)                      \
  switch (F) {                                                                \
    case 1: KERNEL<1><<<GRID, kThreads, 0, STREAM>>>(__VA_ARGS__); break;     \
    case 2: KERNEL<2><<<GRID, kThreads, 0, STREAM>>>(__VA_ARGS__); break;     \
    case 4: KERNEL<4><<<GRID, kThreads, 0, STREAM>>>(__VA_ARGS__); break;     \
    case 8: KERNEL<8><<<GRID, kThreads, 0, STREAM>>>(__VA_ARGS__); break;     \
    default: KERNEL<0><<<GRID, kThreads, 0, STREAM>>>(__VA_ARGS__); break;    \
  }

ffi::Error FwdImpl(cudaStream_t stream, F32Buf tables, F32Buf x, ffi::ResultBuffer<ffi::F32> out,
                   I64Span res, I64Span offsets, I64Span sizes, I64Span hashed, int64_t log2_t) {
  auto td = tables.dimensions();
  auto xd = x.dimensions();
  if (td.size() != 2 || xd.size() != 2 || xd[1] != 3)
    return ffi::Error::InvalidArgument("hash grid: tables must be [rows, F], x [P, 3]");
  Levels levels;
  if (auto e = MakeLevels(res, offsets, sizes, hashed, log2_t, td[0], levels); e.failure()) return e;
  if (auto e = CheckF(td[1]); e.failure()) return e;
  const int64_t np = xd[0];
  if (np == 0) return ffi::Error::Success();
  const int fdim = static_cast<int>(td[1]);
  if (auto e = CheckFeatures(out->dimensions(), np, levels.count, td[1]); e.failure()) return e;
  dim3 grid;
  if (auto e = GridFor(np * levels.count, grid); e.failure()) return e;
  NERFKIT_DISPATCH_F(fdim, FwdKernel, grid, stream, levels, fdim, tables.typed_data(),
                     x.typed_data(), out->typed_data(), np);
  return LaunchStatus("forward");
}

ffi::Error BwdTablesImpl(cudaStream_t stream, F32Buf x, F32Buf g,
                         ffi::ResultBuffer<ffi::F32> dtab, I64Span res, I64Span offsets,
                         I64Span sizes, I64Span hashed, int64_t log2_t) {
  auto td = dtab->dimensions();
  auto xd = x.dimensions();
  if (td.size() != 2 || xd.size() != 2 || xd[1] != 3)
    return ffi::Error::InvalidArgument("hash grid: d_tables must be [rows, F], x [P, 3]");
  Levels levels;
  if (auto e = MakeLevels(res, offsets, sizes, hashed, log2_t, td[0], levels); e.failure()) return e;
  if (auto e = CheckF(td[1]); e.failure()) return e;
  if (cudaMemsetAsync(dtab->typed_data(), 0, dtab->size_bytes(), stream) != cudaSuccess)
    return LaunchStatus("memset");
  const int64_t np = xd[0];
  if (np == 0) return ffi::Error::Success();
  const int fdim = static_cast<int>(td[1]);
  if (auto e = CheckFeatures(g.dimensions(), np, levels.count, td[1]); e.failure()) return e;
  dim3 grid;
  if (auto e = GridFor(np * levels.count, grid); e.failure()) return e;
  NERFKIT_DISPATCH_F(fdim, BwdTablesKernel, grid, stream, levels, fdim, x.typed_data(),
                     g.typed_data(), dtab->typed_data(), np);
  return LaunchStatus("backward (tables)");
}

ffi::Error BwdXImpl(cudaStream_t stream, F32Buf tables, F32Buf x, F32Buf g,
                    ffi::ResultBuffer<ffi::F32> dx, I64Span res, I64Span offsets, I64Span sizes,
                    I64Span hashed, int64_t log2_t) {
  auto td = tables.dimensions();
  auto xd = x.dimensions();
  if (td.size() != 2 || xd.size() != 2 || xd[1] != 3)
    return ffi::Error::InvalidArgument("hash grid: tables must be [rows, F], x [P, 3]");
  Levels levels;
  if (auto e = MakeLevels(res, offsets, sizes, hashed, log2_t, td[0], levels); e.failure()) return e;
  if (auto e = CheckF(td[1]); e.failure()) return e;
  const int64_t np = xd[0];
  if (np == 0) return ffi::Error::Success();
  const int fdim = static_cast<int>(td[1]);
  if (auto e = CheckFeatures(g.dimensions(), np, levels.count, td[1]); e.failure()) return e;
  dim3 grid;
  if (auto e = GridFor(np, grid); e.failure()) return e;
  NERFKIT_DISPATCH_F(fdim, BwdXKernel, grid, stream, levels, fdim, tables.typed_data(),
                     x.typed_data(), g.typed_data(), dx->typed_data(), np);
  return LaunchStatus("backward (x)");
}

}  // namespace

#define NERFKIT_EXPORT extern "C" __attribute__((visibility("default")))
NERFKIT_EXPORT XLA_FFI_Error* NerfkitHashGridFwdCuda(XLA_FFI_CallFrame*);
NERFKIT_EXPORT XLA_FFI_Error* NerfkitHashGridBwdTablesCuda(XLA_FFI_CallFrame*);
NERFKIT_EXPORT XLA_FFI_Error* NerfkitHashGridBwdXCuda(XLA_FFI_CallFrame*);

#define NERFKIT_HG_LEVEL_ATTRS                  \
  .Attr<I64Span>("resolutions")                 \
      .Attr<I64Span>("offsets")                 \
      .Attr<I64Span>("table_sizes")             \
      .Attr<I64Span>("hashed")                  \
      .Attr<int64_t>("log2_table_size")

XLA_FFI_DEFINE_HANDLER_SYMBOL(NerfkitHashGridFwdCuda, FwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32Buf>()
                                  .Arg<F32Buf>()
                                  .Ret<F32Buf>() NERFKIT_HG_LEVEL_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NerfkitHashGridBwdTablesCuda, BwdTablesImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32Buf>()
                                  .Arg<F32Buf>()
                                  .Ret<F32Buf>() NERFKIT_HG_LEVEL_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NerfkitHashGridBwdXCuda, BwdXImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32Buf>()
                                  .Arg<F32Buf>()
                                  .Arg<F32Buf>()
                                  .Ret<F32Buf>() NERFKIT_HG_LEVEL_ATTRS);
