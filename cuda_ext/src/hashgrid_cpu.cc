// XLA FFI CPU handlers of the multiresolution hash-grid encoding (nerfkit).
//
//   nerfkit_hg_fwd        (tables [R, F], x [P, 3])                -> out [P, L*F]
//   nerfkit_hg_bwd_tables (x [P, 3], g [P, L*F])                   -> d_tables [R, F]
//   nerfkit_hg_bwd_x      (tables [R, F], x [P, 3], g [P, L*F])    -> d_x [P, 3]
//
// Attributes (from nerfkit.core.hashgrid.HashGridConfig): resolutions, offsets, table_sizes,
// hashed (int64 arrays of length L) and log2_table_size. x must already be clamped to [0, 1]
// (the Python wrapper does it, so that the clamp's gradient is JAX's).
//
// How it is fast on a CPU (measured on the 2-core Zen 5 dev box, see cuda_ext/README.md). The
// hashed levels are bound by random accesses into a 4 MiB table (T = 2^19, F = 2): ~4.5 cache
// lines per point and level, ~1.3-1.7 ns per line from L3 on one core, whatever the prefetching.
// Everything else is kept off that path:
//
// * Level-major order: all threads work on the same level at the same time, and its table stays
//   in the last-level cache (a point-major order cycles through all 48 MiB of tables: 4x
//   slower). Before a large level's chunks, its table is read sequentially in slices (work items
//   of the same parallel loop, no barrier): first touches of a cold table at random cost ~15%.
// * Level-major features in a reused scratch buffer ([L, P, F], each level cache-line aligned),
//   written as whole lines with non-temporal stores (a block of points at a time, so the
//   tables are not evicted), converted to / from nerfkit's [P, L*F] by a transpose: for F = 2
//   and L % 8 == 0 an AVX-512 8x8 transpose with non-temporal stores (2x faster than element
//   copies), else element copies. Strided [P, L*F] accesses from the level loop would move
//   a 64-byte line per 8 bytes.
// * Corner rows and weights 16 points at a time with SIMD (GCC vector extensions) from a
//   coordinate-major copy of x; table rows are loaded (and, backward, read-modified-written)
//   as one 8-byte vector at F = 2, the two x-adjacent rows of a direct level as one 16-byte
//   vector; rows kAhead points further on are software-prefetched for tables larger than L2.
// * Fresh multi-MiB output buffers are advised to use transparent huge pages (first writes to
//   a fresh 32 MiB buffer took 17 ms in 4 KiB pages, 3.3 ms in huge pages).
// * Threads: XLA's intra-op thread pool (ffi::ThreadPool), shared with XLA:CPU's own work, no
//   oversubscription; the calling thread works too, and alone when there is no pool.
// * Backward scatter-add: the levels occupy disjoint rows of the flat table, so each task owns
//   whole levels (zeroed just before, which also pulls them into the cache): no atomics and no
//   per-thread table copies, and the result is bitwise deterministic. (Measured alternatives,
//   removed: point blocks with atomic float adds made fwd+bwd 1.85x slower, per-thread partial
//   tables summed at the end 1.35x slower; AVX-512 gathers were no faster than scalar loads.)

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <sys/mman.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "hashgrid_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using nerfkit_hg::Level;

namespace {

// ------------------------------------------------------------------------------------------
// Parallel loop over [0, n) on XLA's thread pool; the caller participates and only waits for
// items that a worker has already claimed, so it cannot deadlock on a busy or absent pool.
// ------------------------------------------------------------------------------------------
struct LoopState {
  std::atomic<int64_t> next{0};
  std::atomic<int> active{0};
  std::mutex mu;
  std::condition_variable cv;
};

template <typename Fn>
void Drain(LoopState& s, int64_t n, const Fn& fn) {
  for (int64_t i = s.next.fetch_add(1); i < n; i = s.next.fetch_add(1)) fn(i);
}

template <typename Pool, typename Fn>
void ParallelFor(Pool& pool, int64_t n, const Fn& fn) {
  if (n <= 0) return;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t helpers = std::min<int64_t>(threads, n) - 1;
  if (helpers <= 0) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto state = std::make_shared<LoopState>();
  const Fn* fp = &fn;
  for (int64_t t = 0; t < helpers; ++t) {
    pool.Schedule([state, fp, n] {
      state->active.fetch_add(1);
      Drain(*state, n, *fp);  // claims nothing once the caller has finished the loop
      if (state->active.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    });
  }
  Drain(*state, n, fn);
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->active.load() == 0; });
}

// ------------------------------------------------------------------------------------------
// Large buffers that are about to be written for the first time (XLA's fresh output buffers,
// scratch) are advised to use transparent huge pages: page-faulting 4 KiB pages in one by one
// otherwise costs about as much as the transpose that writes them. Only a hint; a no-op where
// THP is off.
// ------------------------------------------------------------------------------------------
void AdviseHugePages(void* p, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (bytes < 2 * kHuge) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
}

// ------------------------------------------------------------------------------------------
// Scratch buffers, kept across calls: a fresh multi-MiB allocation is page-faulted in on every
// call (mmap'd by malloc), which costs as much as the transpose it serves.
// ------------------------------------------------------------------------------------------
// One scratch allocation, 64-byte aligned (whole cache lines: the transposes stream to it).
struct ScratchBuf {
  std::unique_ptr<float[]> raw;
  float* data = nullptr;
  size_t n = 0;
};

class ScratchPool {
 public:
  ScratchBuf Take(size_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < free_.size(); ++i) {  // smallest first: best fit
        if (free_[i].n >= n) {
          ScratchBuf found = std::move(free_[i]);
          free_.erase(free_.begin() + i);
          return found;
        }
      }
    }
    ScratchBuf buf;
    buf.raw.reset(new float[n + 16]);
    buf.data = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.raw.get()) + 63) &
                                        ~uintptr_t{63});
    buf.n = n;
    AdviseHugePages(buf.data, n * sizeof(float));
    return buf;
  }

  void Give(ScratchBuf buf) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(buf));
    // Keep the four largest (a call holds two; two calls may run at once), smallest first.
    std::sort(free_.begin(), free_.end(), [](auto& a, auto& b) { return a.n > b.n; });
    if (free_.size() > 4) free_.resize(4);
    std::reverse(free_.begin(), free_.end());
  }

 private:
  std::mutex mu_;
  std::vector<ScratchBuf> free_;
};

ScratchPool& Pool() {
  static ScratchPool* pool = new ScratchPool();  // never destroyed: safe at process exit
  return *pool;
}

// A scratch buffer of at least n floats for the duration of one call.
class Scratch {
 public:
  explicit Scratch(size_t n) : held_(Pool().Take(n)) {}
  ~Scratch() { Pool().Give(std::move(held_)); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* data() const { return held_.data; }

 private:
  ScratchBuf held_;
};

// ------------------------------------------------------------------------------------------
// Attributes -> per-level constants, with the checks that keep every index in bounds.
// ------------------------------------------------------------------------------------------
using I64Span = ffi::Span<const int64_t>;

ffi::Error MakeLevels(I64Span res, I64Span offsets, I64Span sizes, I64Span hashed,
                      int64_t log2_t, int64_t rows, std::vector<Level>& levels) {
  const size_t L = res.size();
  if (L == 0 || L > static_cast<size_t>(nerfkit_hg::kMaxLevels) || offsets.size() != L ||
      sizes.size() != L || hashed.size() != L)
    return ffi::Error::InvalidArgument("hash grid: inconsistent level attributes");
  if (log2_t < 1 || log2_t > 30) return ffi::Error::InvalidArgument("hash grid: bad log2_table_size");
  const int64_t t = int64_t{1} << log2_t;
  levels.resize(L);
  int64_t expect = 0;
  for (size_t l = 0; l < L; ++l) {
    const int64_t n = res[l];
    const int64_t verts = (n + 1) * (n + 1) * (n + 1);
    const bool h = hashed[l] != 0;
    if (n < 1 || n > (1 << 24) || offsets[l] != expect || sizes[l] != (h ? t : verts) ||
        (!h && verts > t))
      return ffi::Error::InvalidArgument("hash grid: level " + std::to_string(l) +
                                         " attributes do not match the table layout");
    expect += sizes[l];
    Level& lv = levels[l];
    lv.res = static_cast<float>(n);
    lv.hashed = h;
    lv.mult1 = h ? nerfkit_hg::kPrime1 : static_cast<uint32_t>(n + 1);
    lv.mult2 = h ? nerfkit_hg::kPrime2 : static_cast<uint32_t>((n + 1) * (n + 1));
    lv.mask = static_cast<uint32_t>(t - 1);
    lv.offset = offsets[l];
  }
  if (expect != rows)
    return ffi::Error::InvalidArgument("hash grid: table has " + std::to_string(rows) +
                                       " rows, the config needs " + std::to_string(expect));
  return ffi::Error::Success();
}

constexpr int64_t kChunk = 8192;  // points per task
constexpr int kSub = 64;          // points whose corners are computed at once (one Block)
constexpr int kLanes = 16;        // SIMD width of the corner computation
constexpr int kAhead = 16;        // prefetch distance, in points (8..32 measured the same)
// Levels whose table is larger than this are prefetched (smaller ones stay in L1/L2, where the
// prefetch instructions only cost time).
constexpr int64_t kPrefetchBytes = 256 << 10;

// Reads one word per cache line of [p, p + n): pulls a table slice into the cache with
// sequential, prefetcher-friendly loads before it is accessed at random.
inline void Warm(const float* p, int64_t n) {
  uint32_t acc = 0;
  const uint32_t* w = reinterpret_cast<const uint32_t*>(p);
  for (int64_t i = 0; i < n; i += 16) acc ^= w[i];
  asm volatile("" : : "r"(acc));
}

// fn(l, p0, p1) for every level l and chunk [p0, p1) of the points, in level-major order: the
// threads work on the same level at the same time, whose table stays in the cache. A level whose
// table is larger than L2 is first pulled into the cache in slices by sequential loads (work
// items just before its chunks): random first touches of a cold 4 MiB table cost ~15% of the
// level. One parallel loop for all levels: no barrier per level (a preempted thread on a busy
// machine would stall the others at each).
template <typename Pool, typename Fn>
void LevelMajorFor(Pool& pool, int L, int64_t np, const float* tab, const std::vector<Level>& levels,
                   I64Span sizes, int F, const Fn& fn) {
  const int64_t nchunks = (np + kChunk - 1) / kChunk;
  constexpr int64_t kSlice = 64 << 10;  // floats per warm-up item
  std::vector<int64_t> first(L + 1, 0), nwarm(L, 0);  // first item of each level
  for (int l = 0; l < L; ++l) {
    const int64_t n = sizes[l] * F;
    nwarm[l] = n * 4 > kPrefetchBytes ? (n + kSlice - 1) / kSlice : 0;
    first[l + 1] = first[l] + nwarm[l] + nchunks;
  }
  ParallelFor(pool, first[L], [&](int64_t i) {
    const int l = static_cast<int>(std::upper_bound(first.begin(), first.end(), i) - first.begin()) - 1;
    const int64_t j = i - first[l];
    if (j < nwarm[l]) {
      const int64_t n = sizes[l] * F;
      Warm(tab + levels[l].offset * F + j * kSlice, std::min(kSlice, n - j * kSlice));
      return;
    }
    const int64_t p0 = (j - nwarm[l]) * kChunk;
    fn(l, p0, std::min(np, p0 + kChunk));
  });
}

// Points per level in the level-major scratch buffers: np rounded up to 8, so that every
// level starts on a cache line (F = 2: 8 points are one 64-byte line).
inline int64_t LevelStride(int64_t np) { return (np + 7) / 8 * 8; }

#if defined(__AVX512F__)
// In-register transpose of an 8x8 matrix of 64-bit elements (r[i] = row i).
inline void Transpose8x8(__m512i r[8]) {
  __m512i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_epi64(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi64(r[2 * i], r[2 * i + 1]);
  }
  const __m512i i0 = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
  const __m512i i1 = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
  u[0] = _mm512_permutex2var_epi64(t[0], i0, t[2]);
  u[1] = _mm512_permutex2var_epi64(t[1], i0, t[3]);
  u[2] = _mm512_permutex2var_epi64(t[0], i1, t[2]);
  u[3] = _mm512_permutex2var_epi64(t[1], i1, t[3]);
  u[4] = _mm512_permutex2var_epi64(t[4], i0, t[6]);
  u[5] = _mm512_permutex2var_epi64(t[5], i0, t[7]);
  u[6] = _mm512_permutex2var_epi64(t[4], i1, t[6]);
  u[7] = _mm512_permutex2var_epi64(t[5], i1, t[7]);
  const __m512i j0 = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
  const __m512i j1 = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_permutex2var_epi64(u[i], j0, u[i + 4]);
    r[i + 4] = _mm512_permutex2var_epi64(u[i], j1, u[i + 4]);
  }
}
#endif

// [L, stride, F] <-> [P, L*F] (the level-major scratch and nerfkit's layout), in blocks of
// points, in parallel. F = 2 with L a multiple of 8 (the NGP default) has an AVX-512 path:
// 8 points x 8 levels of 8 bytes are 8 cache lines on either side, transposed in registers and
// written as whole lines with non-temporal stores (no read-for-ownership, no cache pollution:
// 2x faster than element copies). Otherwise element copies, point-major (the [P, L*F] side is
// read or written contiguously).
template <int kF, typename Pool>
void Transpose(Pool& pool, const float* src, float* dst, int L, int64_t np, int fdim,
               bool to_points) {
  const int F = kF > 0 ? kF : fdim;
  const int64_t ls = LevelStride(np) * F;  // floats between levels on the [L, stride, F] side
  constexpr int64_t kRows = 2048;
  const int64_t nblocks = (np + kRows - 1) / kRows;
  auto copy = [=](int64_t p0, int64_t p1) {
    if (to_points) {
      float* __restrict d = dst + p0 * L * F;
      for (int64_t p = p0; p < p1; ++p) {
        const float* __restrict s = src + p * F;
        for (int l = 0; l < L; ++l, d += F) std::memcpy(d, s + l * ls, sizeof(float) * F);
      }
    } else {
      const float* __restrict s = src + p0 * L * F;
      for (int64_t p = p0; p < p1; ++p) {
        float* __restrict d = dst + p * F;
        for (int l = 0; l < L; ++l, s += F) std::memcpy(d + l * ls, s, sizeof(float) * F);
      }
    }
  };
#if defined(__AVX512F__)
  if (kF == 2 && L % 8 == 0) {
    // The [P, L*F] side may be unaligned (then plain stores); the scratch side is aligned.
    const bool aligned = (reinterpret_cast<uintptr_t>(to_points ? dst : src) & 63) == 0;
    ParallelFor(pool, nblocks, [=](int64_t b) {
      const int64_t p0 = b * kRows, p1 = std::min(np, p0 + kRows), pv = p0 + (p1 - p0) / 8 * 8;
      for (int64_t p = p0; p < pv; p += 8) {
        for (int lg = 0; lg < L; lg += 8) {
          __m512i r[8];
          if (to_points) {
            for (int i = 0; i < 8; ++i) r[i] = _mm512_load_si512(src + (lg + i) * ls + p * 2);
            Transpose8x8(r);
            for (int i = 0; i < 8; ++i) {
              float* d = dst + ((p + i) * L + lg) * 2;
              if (aligned)
                _mm512_stream_si512(reinterpret_cast<__m512i*>(d), r[i]);
              else
                _mm512_storeu_si512(d, r[i]);
            }
          } else {
            for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_si512(src + ((p + i) * L + lg) * 2);
            Transpose8x8(r);
            for (int i = 0; i < 8; ++i)
              _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + (lg + i) * ls + p * 2), r[i]);
          }
        }
      }
      copy(pv, p1);
      _mm_sfence();
    });
    return;
  }
#endif
  ParallelFor(pool, nblocks, [=](int64_t b) {
    const int64_t p0 = b * kRows;
    copy(p0, std::min(np, p0 + kRows));
  });
}

// ------------------------------------------------------------------------------------------
// Corner rows and weights of kSub points at one level, kLanes points at a time. The arithmetic
// is exactly nerfkit_hg::cell / corners (same operations in the same order), vectorised.
// ------------------------------------------------------------------------------------------
typedef float VF __attribute__((vector_size(4 * kLanes)));
typedef int32_t VI __attribute__((vector_size(4 * kLanes)));
typedef uint32_t VU __attribute__((vector_size(4 * kLanes)));

struct Block {
  alignas(64) uint32_t row[8][kSub];  // level-relative row of corner k of point i
  alignas(64) float w[8][kSub];       // its trilinear weight
  alignas(64) float frac[3][kSub];    // position in the cell (for d/dx)
};

// The points, coordinate-major: x [np, 3] copied to [3, stride] (stride: np rounded up to a
// whole Block, the tail padded with 0), so that the corner computation loads whole SIMD vectors
// of one coordinate instead of de-interleaving x at every level.
struct Points {
  const float* xs;
  int64_t stride;
};

template <typename Pool>
Points ToSoA(Pool& pool, const float* x, int64_t np, float* xs) {
  const int64_t stride = (np + kSub - 1) / kSub * kSub;
  constexpr int64_t kRows = 8192;
  ParallelFor(pool, (stride + kRows - 1) / kRows, [=](int64_t b) {
    const int64_t p0 = b * kRows, p1 = std::min(stride, p0 + kRows), pe = std::min(np, p1);
    for (int64_t p = p0; p < pe; ++p)
      for (int d = 0; d < 3; ++d) xs[d * stride + p] = x[3 * p + d];
    for (int64_t p = std::max(p0, pe); p < p1; ++p)
      for (int d = 0; d < 3; ++d) xs[d * stride + p] = 0.0f;
  });
  return Points{xs, stride};
}

inline size_t SoASize(int64_t np) { return 3 * static_cast<size_t>((np + kSub - 1) / kSub * kSub); }

// Corner rows and weights of points p .. p + kSub (those past the end are the zero padding).
template <bool kHashed>
void ComputeBlock(const Level& lv, const Points& pts, int64_t p, Block& b) {
  const VF zero = {}, res = lv.res + zero, top = (lv.res - 1.0f) + zero;
  const VU uz = {}, mult1 = lv.mult1 + uz, mult2 = lv.mult2 + uz, mask = lv.mask + uz;
  for (int i = 0; i < kSub; i += kLanes) {
    VU c[3];
    VF fr[3];
    for (int d = 0; d < 3; ++d) {
      VF xv;
      std::memcpy(&xv, pts.xs + d * pts.stride + p + i, sizeof(VF));
      const VF pos = xv * res;
      const VF ps = pos >= 0.0f ? pos : zero;  // NaN -> 0 (frac stays NaN)
      VF f = __builtin_convertvector(__builtin_convertvector(ps, VI), VF);  // floor, pos >= 0
      f = f < top ? f : top;                                               // x == 1: last cell
      c[d] = (VU)__builtin_convertvector(f, VI);
      fr[d] = pos - f;
      std::memcpy(&b.frac[d][i], &fr[d], sizeof(VF));
    }
    const VU hx[2] = {c[0], c[0] + 1u};
    const VU hy[2] = {c[1] * mult1, (c[1] + 1u) * mult1};
    const VU hz[2] = {c[2] * mult2, (c[2] + 1u) * mult2};
    const VF wx[2] = {1.0f - fr[0], fr[0]}, wy[2] = {1.0f - fr[1], fr[1]},
             wz[2] = {1.0f - fr[2], fr[2]};
    for (int k = 0; k < 8; ++k) {
      const int bx = k & 1, by = (k >> 1) & 1, bz = k >> 2;
      const VU h = kHashed ? ((hx[bx] ^ hy[by] ^ hz[bz]) & mask) : (hx[bx] + hy[by] + hz[bz]);
      const VF wk = wx[bx] * wy[by] * wz[bz];
      std::memcpy(&b.row[k][i], &h, sizeof(VU));
      std::memcpy(&b.w[k][i], &wk, sizeof(VF));
    }
  }
}

// Runs body(block, i, p) for every point p = p0 .. p1 (i: its index in the block) at one level.
// With kPrefetch, the corner rows of the point kAhead further on are prefetched; blocks are
// double-buffered so that the prefetch distance carries over block boundaries. Only corners
// with bx = 0 are prefetched: with F <= 2 the bx = 1 row is on the same cache line 7 times out
// of 8 (pi_1 = 1 in the hash, +1 in direct indexing).
template <bool kHashed, bool kPrefetch, bool kForWrite, typename Body, typename End>
void LevelLoop(const Level& lv, const Points& pts, int64_t p0, int64_t p1, const float* tab_l,
               int F, const Body& body, const End& end) {
  Block blk[2];
  int cur = 0;
  int m = static_cast<int>(std::min<int64_t>(kSub, p1 - p0));
  ComputeBlock<kHashed>(lv, pts, p0, blk[0]);
  for (int64_t p = p0; p < p1; p += kSub) {
    const int64_t pn = p + kSub;
    const int mn = pn < p1 ? static_cast<int>(std::min<int64_t>(kSub, p1 - pn)) : 0;
    if (mn > 0) ComputeBlock<kHashed>(lv, pts, pn, blk[cur ^ 1]);
    const Block& b = blk[cur];
    for (int i = 0; i < m; ++i) {
      if (kPrefetch) {
        const int j = i + kAhead;
        const Block* bp = j < m ? &b : (j - kSub < mn ? &blk[cur ^ 1] : nullptr);
        if (bp) {
          const int jj = j < m ? j : j - kSub;
          for (int k = 0; k < 8; k += 2)
            __builtin_prefetch(tab_l + static_cast<int64_t>(bp->row[k][jj]) * F, kForWrite, 3);
        }
      }
      body(b, i, p + i, std::bool_constant<kHashed>{});
    }
    end(p, m);
    cur ^= 1;
    m = mn;
  }
}

// Dispatches on the level's indexing mode and on whether its table is worth prefetching;
// body(block, i, p) runs for every point p (i: its index in the block) and
// end(p, m) runs after the m points of each block starting at point p.
template <bool kForWrite, typename Body, typename End>
void ForLevelPoints(const Level& lv, int64_t level_rows, const Points& pts, int64_t p0, int64_t p1,
                    const float* tab_l, int F, const Body& body, const End& end) {
  const bool big = level_rows * F * static_cast<int64_t>(sizeof(float)) > kPrefetchBytes;
  if (lv.hashed) {
    if (big)
      LevelLoop<true, true, kForWrite>(lv, pts, p0, p1, tab_l, F, body, end);
    else
      LevelLoop<true, false, kForWrite>(lv, pts, p0, p1, tab_l, F, body, end);
  } else {
    if (big)
      LevelLoop<false, true, kForWrite>(lv, pts, p0, p1, tab_l, F, body, end);
    else
      LevelLoop<false, false, kForWrite>(lv, pts, p0, p1, tab_l, F, body, end);
  }
}

// ------------------------------------------------------------------------------------------
// The three operations; kF > 0 is a compile-time feature width, kF == 0 the runtime fdim.
// ------------------------------------------------------------------------------------------
// One table row of kF features (kF = 1, 2, 4, 8) as a GCC vector, loaded and stored whole:
// one 8-byte access per row at F = 2 instead of two scalar ones, and, having the cotangent in
// registers, no reloads around the backward's read-modify-writes (which the compiler would
// otherwise have to assume alias it).
typedef float V4 __attribute__((vector_size(16)));
inline V4 Load4(const float* p) {
  V4 v;
  std::memcpy(&v, p, sizeof(V4));
  return v;
}
inline void Store4(float* p, V4 v) { std::memcpy(p, &v, sizeof(V4)); }

#if defined(__SSE2__)
// One F = 2 table row to / from the low half of an SSE register, in one instruction.
inline __m128 Load2(const float* p) {
  return _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p)));
}
inline void Store2(float* p, __m128 v) { _mm_store_sd(reinterpret_cast<double*>(p), _mm_castps_pd(v)); }
#endif

template <int kF>
struct RowVec {
  typedef float T __attribute__((vector_size(4 * kF)));
  static T Load(const float* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
  }
  static void Store(float* p, T v) { std::memcpy(p, &v, sizeof(T)); }
};

// dst[0, n) = src[0, n): with non-temporal stores where dst is cache-line aligned (the level-
// major scratch is written once and read back by the transpose long after: streaming it keeps
// the tables in the cache), else memcpy.
inline void StoreFence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

inline void StreamOut(float* dst, const float* src, int64_t n) {
#if defined(__AVX512F__)
  if ((reinterpret_cast<uintptr_t>(dst) & 63) == 0) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
    std::memcpy(dst + j, src + j, sizeof(float) * (n - j));
    return;
  }
#endif
  std::memcpy(dst, src, sizeof(float) * n);
}

template <int kF>
struct FwdOp {
  // out[p, l*F : (l+1)*F] = sum_k w_k tables[row_k, :]
  template <typename Pool>
  static void Run(Pool& pool, const std::vector<Level>& levels, I64Span sizes,
                  int fdim, const float* tab, const float* x, float* out, int64_t np) {
    const int L = static_cast<int>(levels.size());
    const int F = kF > 0 ? kF : fdim;
    Scratch scratch(static_cast<size_t>(L * LevelStride(np) * F)), xscratch(SoASize(np));
    float* lpf = scratch.data();
    const Points pts = ToSoA(pool, x, np, xscratch.data());
    LevelMajorFor(pool, L, np, tab, levels, sizes, F, [&](int l, int64_t p0, int64_t p1) {
      const float* tab_l = tab + levels[l].offset * F;
      float* const out_l = lpf + l * LevelStride(np) * F;
      // A block's features are collected here and written out as whole cache lines.
      alignas(64) float ob[kSub * (kF > 0 ? kF : 16)];
      ForLevelPoints<false>(levels[l], sizes[l], pts, p0, p1, tab_l, F,
                            [tab_l, F, &ob](const Block& b, int i, int64_t, auto hashed) {
        if constexpr (kF == 2 && !decltype(hashed)::value) {
          // Direct level: the bx = 0, 1 corners are adjacent rows, one 16-byte load per pair.
          V4 acc = {};
          for (int k = 0; k < 8; k += 2) {
            const V4 w = {b.w[k][i], b.w[k][i], b.w[k + 1][i], b.w[k + 1][i]};
            acc += w * Load4(tab_l + static_cast<int64_t>(b.row[k][i]) * 2);
          }
          const RowVec<2>::T sum = {acc[0] + acc[2], acc[1] + acc[3]};
          RowVec<2>::Store(ob + i * 2, sum);
#if defined(__SSE2__)
        } else if constexpr (kF == 2) {
          // Hashed level: one 8-byte load per row straight into an SSE register and an FMA
          // with the broadcast weight (3 instructions per corner; GCC's vector-extension code
          // goes through a general-purpose register), two partial sums (bx = 0 and bx = 1
          // corners) for shorter dependency chains.
          const float* const t = tab_l;
          __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
          for (int k = 0; k < 8; ++k)
            acc[k & 1] = _mm_add_ps(acc[k & 1],
                                    _mm_mul_ps(_mm_set1_ps(b.w[k][i]),
                                               Load2(t + static_cast<int64_t>(b.row[k][i]) * 2)));
          Store2(ob + i * 2, _mm_add_ps(acc[0], acc[1]));
#endif
        } else if constexpr (kF > 0) {
          using R = RowVec<kF>;
          typename R::T acc = {};
          for (int k = 0; k < 8; ++k)
            acc += b.w[k][i] * R::Load(tab_l + static_cast<int64_t>(b.row[k][i]) * kF);
          R::Store(ob + i * kF, acc);
        } else {
          float acc[16];
          for (int f = 0; f < F; ++f) acc[f] = 0.0f;
          for (int k = 0; k < 8; ++k) {
            const float* v = tab_l + static_cast<int64_t>(b.row[k][i]) * F;
            const float wk = b.w[k][i];
            for (int f = 0; f < F; ++f) acc[f] += wk * v[f];
          }
          for (int f = 0; f < F; ++f) ob[i * F + f] = acc[f];
        }
      }, [out_l, F, &ob](int64_t p, int m) { StreamOut(out_l + p * F, ob, m * F); });
      StoreFence();  // the streamed stores before the task counts as done
    });
    AdviseHugePages(out, sizeof(float) * L * np * F);
    Transpose<kF>(pool, lpf, out, L, np, F, /*to_points=*/true);
  }
};

template <int kF>
struct BwdTablesOp {
  // d_tables[row_k, :] += w_k g[p, l*F : (l+1)*F]; each task owns whole levels.
  template <typename Pool>
  static void Run(Pool& pool, const std::vector<Level>& levels, I64Span sizes,
                  int fdim, const float* x, const float* g, float* dtab, int64_t np) {
    const int L = static_cast<int>(levels.size());
    const int F = kF > 0 ? kF : fdim;
    Scratch scratch(static_cast<size_t>(L * LevelStride(np) * F)), xscratch(SoASize(np));
    float* glpf = scratch.data();
    const Points pts = ToSoA(pool, x, np, xscratch.data());
    int64_t rows = 0;
    for (int l = 0; l < L; ++l) rows += sizes[l];
    AdviseHugePages(dtab, sizeof(float) * rows * F);
    Transpose<kF>(pool, g, glpf, L, np, F, /*to_points=*/false);
    // Largest levels first, so that the small direct levels fill the gaps at the end.
    std::vector<int> order(L);
    for (int l = 0; l < L; ++l) order[l] = l;
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return sizes[a] > sizes[b]; });
    ParallelFor(pool, L, [&](int64_t i) {
      const int l = order[i];
      float* d_l = dtab + levels[l].offset * F;
      const float* g_l = glpf + l * LevelStride(np) * F;
      std::memset(d_l, 0, sizeof(float) * sizes[l] * F);
      ForLevelPoints<true>(levels[l], sizes[l], pts, 0, np, d_l, F,
                           [d_l, g_l, F](const Block& b, int i, int64_t p, auto hashed) {
        if constexpr (kF == 2 && !decltype(hashed)::value) {
          // Direct level: one 16-byte read-modify-write per pair of adjacent rows (bx = 0, 1).
          const V4 gv = {g_l[2 * p], g_l[2 * p + 1], g_l[2 * p], g_l[2 * p + 1]};
          for (int k = 0; k < 8; k += 2) {
            float* d = d_l + static_cast<int64_t>(b.row[k][i]) * 2;
            const V4 w = {b.w[k][i], b.w[k][i], b.w[k + 1][i], b.w[k + 1][i]};
            Store4(d, Load4(d) + w * gv);
          }
#if defined(__SSE2__)
        } else if constexpr (kF == 2) {
          // Hashed level: 8-byte read-modify-writes through SSE registers, the table pointer in
          // a local (a captured one is reloaded after every store, which may alias it).
          float* const dl = d_l;
          const __m128 gv = Load2(g_l + p * 2);
          for (int k = 0; k < 8; ++k) {
            float* d = dl + static_cast<int64_t>(b.row[k][i]) * 2;
            Store2(d, _mm_add_ps(Load2(d), _mm_mul_ps(_mm_set1_ps(b.w[k][i]), gv)));
          }
#endif
        } else if constexpr (kF > 0) {
          using R = RowVec<kF>;
          const typename R::T gv = R::Load(g_l + p * kF);
          for (int k = 0; k < 8; ++k) {
            float* d = d_l + static_cast<int64_t>(b.row[k][i]) * kF;
            R::Store(d, R::Load(d) + b.w[k][i] * gv);
          }
        } else {
          float gp[16];
          for (int f = 0; f < F; ++f) gp[f] = g_l[p * F + f];
          for (int k = 0; k < 8; ++k) {
            float* d = d_l + static_cast<int64_t>(b.row[k][i]) * F;
            const float wk = b.w[k][i];
            for (int f = 0; f < F; ++f) d[f] += wk * gp[f];
          }
        }
      }, [](int64_t, int) {});
    });
  }
};

template <int kF>
struct BwdXOp {
  // dx[p] = sum_l N_l sum_k (d w_k / d frac) <g[p, l], v_k>. Per point, no conflicts; each task
  // sums all levels of its points (point-major: d/dx is off the NeRF hot path).
  template <typename Pool>
  static void Run(Pool& pool, const std::vector<Level>& levels, I64Span sizes,
                  int fdim, const float* tab, const float* x, const float* g, float* dx,
                  int64_t np) {
    const int L = static_cast<int>(levels.size());
    const int F = kF > 0 ? kF : fdim;
    Scratch xscratch(SoASize(np));
    const Points pts = ToSoA(pool, x, np, xscratch.data());
    ParallelFor(pool, (np + kChunk - 1) / kChunk, [&](int64_t c) {
      const int64_t p0 = c * kChunk, p1 = std::min(np, p0 + kChunk);
      std::memset(dx + 3 * p0, 0, sizeof(float) * 3 * (p1 - p0));
      for (int l = 0; l < L; ++l) {
        const Level& lv = levels[l];
        const float* tab_l = tab + lv.offset * F;
        ForLevelPoints<false>(lv, sizes[l], pts, p0, p1, tab_l, F,
                              [&](const Block& b, int i, int64_t p, auto) {
          const float* gp = g + (p * L + l) * F;
          float gv[8], frac[3], dfrac[3];
          for (int k = 0; k < 8; ++k) {
            const float* v = tab_l + static_cast<int64_t>(b.row[k][i]) * F;
            float s = 0.0f;
            for (int f = 0; f < F; ++f) s += gp[f] * v[f];
            gv[k] = s;
          }
          for (int d = 0; d < 3; ++d) frac[d] = b.frac[d][i];
          nerfkit_hg::accumulate_dfrac(frac, gv, dfrac);
          for (int d = 0; d < 3; ++d) dx[3 * p + d] += lv.res * dfrac[d];
        }, [](int64_t, int) {});
      }
    });
  }
};

// F = 1, 2, 4, 8 get unrolled inner loops; other widths (up to 16) use the generic path.
template <template <int> class Op, typename... Args>
ffi::Error DispatchF(int64_t f, Args&&... args) {
  switch (f) {
    case 1: Op<1>::Run(args...); break;
    case 2: Op<2>::Run(args...); break;
    case 4: Op<4>::Run(args...); break;
    case 8: Op<8>::Run(args...); break;
    default:
      if (f < 1 || f > 16)
        return ffi::Error::InvalidArgument("hash grid: features_per_level must be in [1, 16]");
      Op<0>::Run(args...);
  }
  return ffi::Error::Success();
}

// ------------------------------------------------------------------------------------------
// Handlers: shape checks, then dispatch.
// ------------------------------------------------------------------------------------------
using F32Buf = ffi::Buffer<ffi::F32>;

ffi::Error Check(ffi::Span<const int64_t> tables_dims, const F32Buf& x, const F32Buf* g,
                 I64Span res, I64Span offsets, I64Span sizes, I64Span hashed, int64_t log2_t,
                 std::vector<Level>& levels, int64_t& np) {
  if (tables_dims.size() != 2)
    return ffi::Error::InvalidArgument("hash grid: tables must be [rows, F]");
  auto xd = x.dimensions();
  if (xd.size() != 2 || xd[1] != 3) return ffi::Error::InvalidArgument("hash grid: x must be [P, 3]");
  np = xd[0];
  if (auto e = MakeLevels(res, offsets, sizes, hashed, log2_t, tables_dims[0], levels);
      e.failure())
    return e;
  if (g) {
    auto gd = g->dimensions();
    if (gd.size() != 2 || gd[0] != np ||
        gd[1] != static_cast<int64_t>(levels.size()) * tables_dims[1])
      return ffi::Error::InvalidArgument("hash grid: cotangent must be [P, L*F]");
  }
  return ffi::Error::Success();
}

ffi::Error FwdImpl(ffi::ThreadPool pool, F32Buf tables, F32Buf x, ffi::ResultBuffer<ffi::F32> out,
                   I64Span res, I64Span offsets, I64Span sizes, I64Span hashed, int64_t log2_t) {
  std::vector<Level> levels;
  int64_t np;
  auto td = tables.dimensions();
  if (auto e = Check(td, x, nullptr, res, offsets, sizes, hashed, log2_t, levels, np); e.failure())
    return e;
  auto od = out->dimensions();
  if (od.size() != 2 || od[0] != np || od[1] != static_cast<int64_t>(levels.size()) * td[1])
    return ffi::Error::InvalidArgument("hash grid: output must be [P, L*F]");
  if (np == 0) return ffi::Error::Success();
  return DispatchF<FwdOp>(td[1], pool, levels, sizes, static_cast<int>(td[1]),
                          tables.typed_data(), x.typed_data(), out->typed_data(), np);
}

ffi::Error BwdTablesImpl(ffi::ThreadPool pool, F32Buf x, F32Buf g,
                         ffi::ResultBuffer<ffi::F32> dtab, I64Span res, I64Span offsets,
                         I64Span sizes, I64Span hashed, int64_t log2_t) {
  std::vector<Level> levels;
  int64_t np;
  auto td = dtab->dimensions();
  if (auto e = Check(td, x, &g, res, offsets, sizes, hashed, log2_t, levels, np); e.failure())
    return e;
  return DispatchF<BwdTablesOp>(td[1], pool, levels, sizes, static_cast<int>(td[1]),
                                x.typed_data(), g.typed_data(), dtab->typed_data(), np);
}

ffi::Error BwdXImpl(ffi::ThreadPool pool, F32Buf tables, F32Buf x, F32Buf g,
                    ffi::ResultBuffer<ffi::F32> dx, I64Span res, I64Span offsets, I64Span sizes,
                    I64Span hashed, int64_t log2_t) {
  std::vector<Level> levels;
  int64_t np;
  auto td = tables.dimensions();
  if (auto e = Check(td, x, &g, res, offsets, sizes, hashed, log2_t, levels, np); e.failure())
    return e;
  return DispatchF<BwdXOp>(td[1], pool, levels, sizes, static_cast<int>(td[1]),
                           tables.typed_data(), x.typed_data(), g.typed_data(),
                           dx->typed_data(), np);
}

}  // namespace

// Exported (the library is built with hidden visibility): the Python side wraps these symbols in
// PyCapsules (jax.ffi.pycapsule) and registers them with jax.ffi.register_ffi_target.
#define NERFKIT_EXPORT extern "C" __attribute__((visibility("default")))
NERFKIT_EXPORT XLA_FFI_Error* NerfkitHashGridFwdCpu(XLA_FFI_CallFrame*);
NERFKIT_EXPORT XLA_FFI_Error* NerfkitHashGridBwdTablesCpu(XLA_FFI_CallFrame*);
NERFKIT_EXPORT XLA_FFI_Error* NerfkitHashGridBwdXCpu(XLA_FFI_CallFrame*);

#define NERFKIT_HG_LEVEL_ATTRS                  \
  .Attr<I64Span>("resolutions")                 \
      .Attr<I64Span>("offsets")                 \
      .Attr<I64Span>("table_sizes")             \
      .Attr<I64Span>("hashed")                  \
      .Attr<int64_t>("log2_table_size")

XLA_FFI_DEFINE_HANDLER_SYMBOL(NerfkitHashGridFwdCpu, FwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buf>()
                                  .Arg<F32Buf>()
                                  .Ret<F32Buf>() NERFKIT_HG_LEVEL_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NerfkitHashGridBwdTablesCpu, BwdTablesImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buf>()
                                  .Arg<F32Buf>()
                                  .Ret<F32Buf>() NERFKIT_HG_LEVEL_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NerfkitHashGridBwdXCpu, BwdXImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buf>()
                                  .Arg<F32Buf>()
                                  .Arg<F32Buf>()
                                  .Ret<F32Buf>() NERFKIT_HG_LEVEL_ATTRS);
