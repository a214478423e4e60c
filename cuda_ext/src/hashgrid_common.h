// Hash-grid encoding math shared by the CPU (hashgrid_cpu.cc) and CUDA (hashgrid_cuda.cu)
// handlers: one (point, level) pair -> 8 table rows and 8 trilinear weights.
//
// Semantics are those of the pure-JAX oracle, nerfkit/core/hashgrid.py (hash_encode_naive):
//   * x is already clamped to [0, 1]^3 by the Python wrapper (so the clamp's gradient is JAX's);
//   * pos = x * N_l, c0 = min(floor(pos), N_l - 1) (x == 1 -> last cell, weight 1 on vertex N_l),
//     frac = pos - c0;
//   * corner c = bx + 2 by + 4 bz, weight w_c = wx * wy * wz with w_d = b_d ? frac_d : 1 - frac_d;
//   * row of a vertex v: direct level  v_x + v_y (N+1) + v_z (N+1)^2,
//                        hashed level (v_x * 1 ^ v_y * 2654435761 ^ v_z * 805459861) & (T - 1),
//     in wrapping uint32 arithmetic, plus the level's offset into the flat [rows, F] table.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HG_HD __host__ __device__ __forceinline__
#define HG_UNROLL _Pragma("unroll")
#else
#define HG_HD inline __attribute__((always_inline))
#define HG_UNROLL _Pragma("GCC unroll 8")
#endif

namespace nerfkit_hg {

constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;
constexpr int kMaxLevels = 64;

// Per-level constants, precomputed once per call from the attributes.
struct Level {
  float res;        // N_l as float
  uint32_t mult1;   // y multiplier: N+1 (direct) or kPrime1 (hashed)
  uint32_t mult2;   // z multiplier: (N+1)^2 (direct) or kPrime2 (hashed)
  uint32_t mask;    // T - 1 for hashed levels (T a power of two); unused for direct
  int64_t offset;   // first row of the level in the flat table
  bool hashed;
};

// Lower cell corner and position inside the cell along one axis (xc already in [0, 1], so
// pos >= 0 and truncation is floor; written without floorf/fminf, which GCC does not inline
// without -ffast-math, and as the CPU handler's SIMD version computes it). A NaN input yields a
// valid index (0) and a NaN weight, so NaNs propagate to the output instead of turning into an
// out-of-bounds read.
HG_HD void cell(float xc, float res, uint32_t& c0, float& frac) {
  const float pos = xc * res;
  const float ps = pos >= 0.0f ? pos : 0.0f;  // NaN -> 0
  float f = static_cast<float>(static_cast<int32_t>(ps));
  f = f < res - 1.0f ? f : res - 1.0f;  // x == 1 -> last cell, frac == 1
  c0 = static_cast<uint32_t>(static_cast<int32_t>(f));
  frac = pos - f;
}

// Rows (absolute, into the flat table) and weights of the 8 corners of one point at one level.
template <bool kHashed>
HG_HD void corners(const Level& lv, const float* xp, int64_t rows[8], float w[8],
                   float frac[3]) {
  uint32_t c[3];
  cell(xp[0], lv.res, c[0], frac[0]);
  cell(xp[1], lv.res, c[1], frac[1]);
  cell(xp[2], lv.res, c[2], frac[2]);
  const uint32_t hx[2] = {c[0], c[0] + 1u};
  const uint32_t hy[2] = {c[1] * lv.mult1, (c[1] + 1u) * lv.mult1};
  const uint32_t hz[2] = {c[2] * lv.mult2, (c[2] + 1u) * lv.mult2};
  const float wx[2] = {1.0f - frac[0], frac[0]};
  const float wy[2] = {1.0f - frac[1], frac[1]};
  const float wz[2] = {1.0f - frac[2], frac[2]};
HG_UNROLL
  for (int k = 0; k < 8; ++k) {
    const int bx = k & 1, by = (k >> 1) & 1, bz = (k >> 2) & 1;
    uint32_t h;
    if (kHashed) {
      h = (hx[bx] ^ hy[by] ^ hz[bz]) & lv.mask;
    } else {
      h = hx[bx] + hy[by] + hz[bz];
    }
    rows[k] = lv.offset + static_cast<int64_t>(h);
    w[k] = wx[bx] * wy[by] * wz[bz];
  }
}

// d out / d frac_d for corner k, times the corner's cotangent gv: the derivative of
// w_k = wx wy wz along axis d is +-1 times the product of the other two axes' weights.
HG_HD void accumulate_dfrac(const float frac[3], const float gv[8], float dfrac[3]) {
  const float wx[2] = {1.0f - frac[0], frac[0]};
  const float wy[2] = {1.0f - frac[1], frac[1]};
  const float wz[2] = {1.0f - frac[2], frac[2]};
  float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f;
HG_UNROLL
  for (int k = 0; k < 8; ++k) {
    const int bx = k & 1, by = (k >> 1) & 1, bz = (k >> 2) & 1;
    const float gk = gv[k];
    d0 += (bx ? gk : -gk) * wy[by] * wz[bz];
    d1 += (by ? gk : -gk) * wx[bx] * wz[bz];
    d2 += (bz ? gk : -gk) * wx[bx] * wy[by];
  }
  dfrac[0] = d0;
  dfrac[1] = d1;
  dfrac[2] = d2;
}

}  // namespace nerfkit_hg
