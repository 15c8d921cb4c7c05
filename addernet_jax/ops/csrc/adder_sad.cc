// Integer adder forward S = sum |x - w| with vpsadbw (AVX-512BW), an XLA FFI handler for CPU.
//
// Built and loaded by addernet_jax/ops/sad_kernel.py; the operand layouts are prepared by
// addernet_jax/ops/integer_sad.py, which also holds the plain description of what this computes.
//
//   x    uint8 (N, Hp, CG, S, Wq, 16): the zero-padded input plus 128 (x_q ^ 0x80), with the
//        padded width split into S = stride_w phases and the channels into granules of 16:
//        x[n, h, g, p, q, c] = xpad[n, h, q * S + p, 16 * g + c]. Channel padding holds 128.
//   w    uint8 (O, kh, kw, CG, 16): the filters plus 128; channel padding holds 128, so a padded
//        channel adds |128 - 128| = 0.
//   out  int32 (N, Ho, Wo, O), Wo a multiple of 4 * pixel_block, O a multiple of 4:
//        out[n, i, j, o] = sum_{u, v, c} |xpad[n, i * sh + u, j * S + v, c] - w[o, u, v, c]|.
//
// One _mm512_sad_epu8 compares 4 output pixels (one 16-byte channel granule each, a 128-bit
// lane) with one broadcast filter granule: per 64-bit half-lane the sum of 8 absolute byte
// differences (at most 2040), accumulated in 64 bits, so no partial sum can overflow.
// Register blocking: a tile is 4 * PB pixels x 4 filters, PB * 4 accumulators, the PB input
// vectors loaded once per granule and reused by the 4 filters.
// Threads: XLA's intra-op pool; work items are (output row, range of pixel tiles, range of
// filter tiles), handed out through an atomic counter.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__GNUC__) || defined(__clang__)
#define ADDER_SAD_TARGET __attribute__((target("avx512f,avx512bw")))
#else
#error "adder_sad.cc needs GCC or Clang (function-level target attributes)"
#endif

namespace {

struct Dims {
  int64_t n, hp, cg, phases, wq, o, kh, kw, ho, wo, stride_h;
};

// Adds the two 64-bit halves of each 128-bit lane of acc[q] (one pixel, its two 8-channel
// halves) and stores pixel k's 4 filter sums (lane k) to out_pixel + k * o_stride.
ADDER_SAD_TARGET inline void store_tile(const __m512i acc[4], int32_t* out_pixel,
                                        int64_t o_stride) {
  // Lane k: qwords [S0, S1] and [S2, S3], the totals of filters 0..3 for pixel k (< 2^31).
  const __m512i s01 = _mm512_add_epi64(_mm512_unpacklo_epi64(acc[0], acc[1]),
                                       _mm512_unpackhi_epi64(acc[0], acc[1]));
  const __m512i s23 = _mm512_add_epi64(_mm512_unpacklo_epi64(acc[2], acc[3]),
                                       _mm512_unpackhi_epi64(acc[2], acc[3]));
  // Lane k: dwords [S0, S1, S2, S3] (the low dword of each qword).
  const __m512i pick = _mm512_set_epi32(30, 28, 14, 12, 26, 24, 10, 8, 22, 20, 6, 4, 18, 16, 2, 0);
  const __m512i sums = _mm512_permutex2var_epi32(s01, pick, s23);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out_pixel), _mm512_castsi512_si128(sums));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out_pixel + o_stride),
                   _mm512_extracti32x4_epi32(sums, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out_pixel + 2 * o_stride),
                   _mm512_extracti32x4_epi32(sums, 2));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out_pixel + 3 * o_stride),
                   _mm512_extracti32x4_epi32(sums, 3));
}

// One tile: pixels j0 .. j0 + 4 * PB - 1 of output row (n, i) against filters o0 .. o0 + 3.
template <int PB>
ADDER_SAD_TARGET void tile_sums(const Dims& d, const uint8_t* x, const uint8_t* w, int32_t* out,
                                int64_t n, int64_t i, int64_t j0, int64_t o0) {
  const int64_t row_bytes = d.cg * d.phases * d.wq * 16;
  const int64_t tap_bytes = d.cg * 16;
  __m512i acc[PB][4];
  for (int p = 0; p < PB; ++p)
    for (int q = 0; q < 4; ++q) acc[p][q] = _mm512_setzero_si512();
  for (int64_t u = 0; u < d.kh; ++u) {
    const uint8_t* x_row = x + (n * d.hp + i * d.stride_h + u) * row_bytes;
    for (int64_t v = 0; v < d.kw; ++v) {
      const int64_t phase = v % d.phases, offset = v / d.phases;
      const uint8_t* w_tap = w + (o0 * d.kh + u) * d.kw * tap_bytes + v * tap_bytes;
      const int64_t w_filter = d.kh * d.kw * tap_bytes;  // bytes from filter o to o + 1
      for (int64_t g = 0; g < d.cg; ++g) {
        const uint8_t* xb = x_row + ((g * d.phases + phase) * d.wq + j0 + offset) * 16;
        __m512i xv[PB];
        for (int p = 0; p < PB; ++p) xv[p] = _mm512_loadu_si512(xb + 64 * p);
        for (int q = 0; q < 4; ++q) {
          const __m128i granule =
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(w_tap + q * w_filter + g * 16));
          const __m512i wv = _mm512_broadcast_i32x4(granule);
          for (int p = 0; p < PB; ++p)
            acc[p][q] = _mm512_add_epi64(acc[p][q], _mm512_sad_epu8(xv[p], wv));
        }
      }
    }
  }
  for (int p = 0; p < PB; ++p) {
    int32_t* dst = out + ((n * d.ho + i) * d.wo + j0 + 4 * p) * d.o + o0;
    store_tile(acc[p], dst, d.o);
  }
}

// How the output is cut into work items: rows x pixel-tile parts x filter-tile parts.
struct Plan {
  int64_t pb, tiles, filter_tiles, tile_parts, filter_parts, items;
};

Plan make_plan(const Dims& d, int64_t pb, int64_t threads) {
  Plan plan{pb, d.wo / (4 * pb), d.o / 4, 1, 1, 0};
  const int64_t rows = d.n * d.ho;
  const int64_t target = threads > 1 ? 8 * threads : 1;  // enough items to balance the threads
  if (rows < target) {
    plan.tile_parts = std::min(plan.tiles, (target + rows - 1) / rows);
    const int64_t so_far = rows * plan.tile_parts;
    if (so_far < target)
      plan.filter_parts = std::min(plan.filter_tiles, (target + so_far - 1) / so_far);
  }
  plan.items = rows * plan.tile_parts * plan.filter_parts;
  return plan;
}

ADDER_SAD_TARGET void run_item(const Dims& d, const Plan& plan, const uint8_t* x,
                               const uint8_t* w, int32_t* out, int64_t item) {
  const int64_t fp = item % plan.filter_parts;
  const int64_t tp = (item / plan.filter_parts) % plan.tile_parts;
  const int64_t row = item / (plan.filter_parts * plan.tile_parts);
  const int64_t n = row / d.ho, i = row % d.ho;
  const int64_t t_begin = tp * plan.tiles / plan.tile_parts;
  const int64_t t_end = (tp + 1) * plan.tiles / plan.tile_parts;
  const int64_t f_begin = fp * plan.filter_tiles / plan.filter_parts;
  const int64_t f_end = (fp + 1) * plan.filter_tiles / plan.filter_parts;
  const int64_t tile_pixels = 4 * plan.pb;
  // Pixel tiles outside, filters inside: a tile's input granules stay in L1 while every filter
  // passes, and its outputs are written once, line by line (with filters outside, a flattened
  // 1x1 layer streamed its input and output through memory once per 4 filters: 10x slower).
  for (int64_t t = t_begin; t < t_end; ++t) {
    for (int64_t f = f_begin; f < f_end; ++f) {
      if (plan.pb == 4) tile_sums<4>(d, x, w, out, n, i, t * tile_pixels, 4 * f);
      else if (plan.pb == 2) tile_sums<2>(d, x, w, out, n, i, t * tile_pixels, 4 * f);
      else tile_sums<1>(d, x, w, out, n, i, t * tile_pixels, 4 * f);
    }
  }
}

// Work shared by the calling thread and the pool's; the last finished item wakes the caller.
struct Work {
  Dims d;
  Plan plan;
  const uint8_t* x;
  const uint8_t* w;
  int32_t* out;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable finished;

  void run() {
    for (int64_t item = next.fetch_add(1); item < plan.items; item = next.fetch_add(1)) {
      run_item(d, plan, x, w, out, item);
      if (done.fetch_add(1) + 1 == plan.items) {
        std::lock_guard<std::mutex> lock(mu);
        finished.notify_all();
      }
    }
  }
};

bool cpu_supported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

ffi::Error CheckShapes(const ffi::Span<const int64_t> xd, const ffi::Span<const int64_t> wd,
                       const ffi::Span<const int64_t> od, int64_t stride_h, int64_t pb) {
  if (xd.size() != 6 || wd.size() != 5 || od.size() != 4 || xd[5] != 16 || wd[4] != 16)
    return ffi::Error::InvalidArgument("adder_sad: operands must be x (N,Hp,CG,S,Wq,16), "
                                       "w (O,kh,kw,CG,16), out (N,Ho,Wo,O)");
  if (wd[3] != xd[2] || od[3] != wd[0] || od[0] != xd[0])
    return ffi::Error::InvalidArgument("adder_sad: operand shapes disagree");
  if ((pb != 1 && pb != 2 && pb != 4) || od[2] % (4 * pb) != 0 || od[3] % 4 != 0)
    return ffi::Error::InvalidArgument("adder_sad: Wo must be a multiple of 4 * pixel_block "
                                       "(1, 2 or 4) and O a multiple of 4");
  const int64_t phases = xd[3];
  if (stride_h < 1 || (od[1] - 1) * stride_h + wd[1] > xd[1] ||
      od[2] + (wd[2] - 1) / phases > xd[4] || phases < 1)
    return ffi::Error::InvalidArgument("adder_sad: the windows reach outside the input");
  return ffi::Error::Success();
}

ffi::Error AdderSadImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::U8> x, ffi::Buffer<ffi::U8> w,
                        ffi::ResultBuffer<ffi::S32> out, int64_t stride_h, int64_t pixel_block) {
  if (!cpu_supported())
    return ffi::Error(ffi::ErrorCode::kUnimplemented, "adder_sad: this CPU has no AVX-512BW");
  const auto xd = x.dimensions(), wd = w.dimensions(), od = out->dimensions();
  ffi::Error status = CheckShapes(xd, wd, od, stride_h, pixel_block);
  if (status.failure()) return status;
  auto work = std::make_shared<Work>();
  work->d = Dims{xd[0], xd[1], xd[2], xd[3], xd[4], wd[0], wd[1], wd[2], od[1], od[2], stride_h};
  // The calling thread works too: with a pool of T threads, T - 1 helpers keep T cores busy
  // whether or not the caller is one of the pool's threads.
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  work->plan = make_plan(work->d, pixel_block, threads);
  work->x = x.typed_data();
  work->w = w.typed_data();
  work->out = out->typed_data();
  if (work->plan.items == 0) return ffi::Error::Success();
  // Pool tasks that start after all items are taken return at once; they hold `work` alive.
  const int64_t helpers = std::min<int64_t>(threads - 1, work->plan.items - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work]() { work->run(); });
  work->run();
  std::unique_lock<std::mutex> lock(work->mu);
  work->finished.wait(lock, [&] { return work->done.load() == work->plan.items; });
  return ffi::Error::Success();
}

}  // namespace

// 1 when this CPU can run the kernel (AVX-512F and AVX-512BW), else 0; read through ctypes
// before the handler is registered.
extern "C" int AdderSadSupported() { return cpu_supported() ? 1 : 0; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdderSad, AdderSadImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("pixel_block"));
