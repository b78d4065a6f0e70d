// Compiled CPU rasterization of depth-sorted 2D splats, forward and backward, with gsplat's rules
// (isect_tiles, rasterize_to_pixels_fwd/bwd): per pixel, front to back,
//     sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,           skipped if sigma < 0
//     alpha = min(max_alpha, opacity exp(-sigma)),       skipped if opacity exp(-sigma) < 1/255
//     stop (exclusive) at the first splat after which the transmittance would be <= 1e-4
// Pixel centres at +0.5. The work unit is one tile of one image: tiles are independent, so threads (OpenMP) take
// tiles dynamically and never write the same memory.
//
// SIMD: a tile's pixels are independent of each other (the sequential dependency runs along each pixel's list of
// splats), so the loops are splat-major and each splat updates one SIMD vector of pixels at a time: Lanes<S> is 16
// floats with AVX-512, 8 with AVX2, 4 with SSE, and one lane when built with -DGSLRM_SCALAR (the scalar fallback).
// The vectors are GCC vector extensions, so the width is fixed at build time for the CPU (-march=native) and no loop
// is left to the auto-vectoriser's judgement; the exponential is evaluated on whole vectors (exp_nonpositive). A splat
// visits only the vectors holding tile rows it can reach with alpha >= 1/255 and where some pixel still composites
// (which changes no result).
//
// The backward walks each pixel's list back to front, recovering the transmittance by division as gsplat's kernel
// does, writes each (tile, splat) pair's gradient into its own slot, then sums the slots per splat in a fixed order.
// Lane sums are taken in a fixed order too, so the result does not depend on the thread count (it does on the SIMD
// width, within float rounding: tests/test_render.py compares the scalar build with the native one).
//
// Plain C ABI (called through ctypes, one argument struct per call: abi.h): no Python or torch headers, so it compiles
// in seconds with any g++.

#include <algorithm>
#include <cstring>
#include <string>

#include "abi.h"
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

constexpr int kMaxTile = 32;  // pixels per tile side supported (tile_size <= 32)
constexpr int kMaxPixels = kMaxTile * kMaxTile;
constexpr int kMaxChannels = 8;

#if defined(GSLRM_SCALAR)
constexpr int kVectorBytes = 0;  // one lane of S
#elif defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;  // SSE2 (every x86-64), NEON
#endif

// One SIMD vector of S (V) and the integer vector of the same shape (I: comparison masks, 0 or -1 per lane).
template <typename S>
struct Lanes {
  static constexpr int bytes = kVectorBytes > 0 ? kVectorBytes : static_cast<int>(sizeof(S));
  static constexpr int count = bytes / static_cast<int>(sizeof(S));
  using Bits = std::conditional_t<sizeof(S) == 4, int32_t, int64_t>;
  typedef S V __attribute__((vector_size(bytes)));
  typedef Bits I __attribute__((vector_size(bytes)));
  static V splat(S s) { return V{} + s; }
  static S sum(const V& v) {  // lanes in a fixed order: the same bits on every thread count
    S total = S(0);
    for (int l = 0; l < count; ++l) total += v[l];
    return total;
  }
  static bool any(const I& m) {
    Bits word = 0;
    for (int l = 0; l < count; ++l) word |= m[l];
    return word != 0;
  }
};

struct Layout {
  int images, width, height, tile_size, tiles_x, tiles_y, channels;
};

// OpenMP, so that the work runs on the same thread pool as torch's own CPU kernels (the soname libgomp.so.1 resolves
// to the runtime torch already loaded): a second pool would compete with torch's spinning workers for the cores.
template <typename F>
void parallel_for(int64_t items, int threads, F&& work) {
  threads = std::max(1, static_cast<int>(std::min<int64_t>(threads, items)));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t item = 0; item < items; ++item) work(item);
}

// exp(x) for x <= 0 on a whole vector: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series (degree 7 for
// float: truncation 6e-9, below float's rounding; degree 13 for double: 4e-18), times 2^n assembled in the exponent
// bits. n is rounded to nearest by adding and subtracting 1.5 2^mantissa. Inputs below the smallest normal's exponent
// are clamped there (exp(-87) ~ 1e-38 in float), far below the 1/255 alpha cut-off.
template <typename S>
struct ExpTraits;
template <>
struct ExpTraits<float> {
  static constexpr float lowest = -87.0f, round = 12582912.0f;
  static constexpr int degree = 7, mantissa = 23, bias = 127;
};
template <>
struct ExpTraits<double> {
  static constexpr double lowest = -708.0, round = 6755399441055744.0;
  static constexpr int degree = 13, mantissa = 52, bias = 1023;
};

template <typename S>
constexpr S factorial(int k) {
  return k <= 1 ? S(1) : S(k) * factorial<S>(k - 1);
}

template <typename S>
inline typename Lanes<S>::V exp_nonpositive(typename Lanes<S>::V x) {
  using E = ExpTraits<S>;
  using L = Lanes<S>;
  using V = typename L::V;
  using I = typename L::I;
  x = x > E::lowest ? x : L::splat(E::lowest);
  x = x < S(0) ? x : L::splat(S(0));
  const V n = (x * S(1.4426950408889634) + E::round) - E::round;
  const V r = (x - n * S(0.693145751953125)) - n * S(1.4286068203094173e-06);  // ln 2 in two parts (Cody-Waite)
  V series;
  if constexpr (E::degree == 7) {  // Estrin's scheme: 4 dependent steps instead of Horner's 7 (the loops are latency-bound)
    auto c = [](int k) { return S(1) / factorial<S>(k); };
    const V r2 = r * r, r4 = r2 * r2;
    series = ((c(0) + c(1) * r) + r2 * (c(2) + c(3) * r)) + r4 * ((c(4) + c(5) * r) + r2 * (c(6) + c(7) * r));
  } else {  // Horner on the coefficients 1/k! (no division in the loop)
    series = L::splat(S(1) / factorial<S>(E::degree));
    for (int k = E::degree - 1; k >= 0; --k) series = series * r + S(1) / factorial<S>(k);
  }
  const I exponent = (__builtin_convertvector(n, I) + E::bias) << E::mantissa;
  return series * std::bit_cast<V>(exponent);
}

// Per splat, once per forward (the backward reuses it), the half-height of the ellipse where it can reach alpha >= 1/255: opacity exp(-sigma) >= 1/255
// means sigma <= ln(255 opacity), whose half-height is sqrt(2 ln(255 opacity) cov_yy), cov_yy = a / (ac - b^2).
// -1: never visible; infinite: a degenerate conic (every row kept). The margin keeps the bound a superset under
// rounding, so leaving the other rows out changes no result.
template <typename S>
void half_heights(const S* conics, const S* opacities, int64_t splats, int threads, S* half) {
  constexpr int64_t block = 4096;
  parallel_for((splats + block - 1) / block, threads, [&](int64_t b) {
    for (int64_t g = b * block; g < std::min(splats, (b + 1) * block); ++g) {
      const S reach = std::log(S(255) * opacities[g]);
      const S a = conics[3 * g], bb = conics[3 * g + 1], c = conics[3 * g + 2], det = a * c - bb * bb;
      if (!(reach >= S(0)))
        half[g] = S(-1);
      else if (!(det > S(0)))
        half[g] = S(INFINITY);
      else
        half[g] = std::sqrt(S(2) * reach * a / det) * S(1.0001) + S(1e-3);
    }
  });
}

template <typename S>
struct Tile {
  using L = Lanes<S>;
  using V = typename L::V;
  static constexpr int kMaxVectors = (kMaxPixels + L::count - 1) / L::count;
  int x0, y0, size, vectors;
  V px[kMaxVectors], py[kMaxVectors];  // pixel centres (row-major in the tile); padding lanes far away
  int64_t pix[kMaxVectors * L::count];  // flat image pixel index; -1 outside the (cropped) image and in the padding

  Tile(const Layout& layout, int64_t t) {
    const int64_t per_image = static_cast<int64_t>(layout.tiles_x) * layout.tiles_y;
    const int image = static_cast<int>(t / per_image), within = static_cast<int>(t % per_image);
    size = layout.tile_size;
    x0 = (within % layout.tiles_x) * size;
    y0 = (within / layout.tiles_x) * size;
    vectors = (size * size + L::count - 1) / L::count;
    for (int p = 0; p < vectors * L::count; ++p) {
      const int x = x0 + p % size, y = y0 + p / size;
      const bool inside = p < size * size && x < layout.width && y < layout.height;
      pix[p] = inside ? (static_cast<int64_t>(image) * layout.height + y) * layout.width + x : -1;
      px[p / L::count][p % L::count] = inside ? static_cast<S>(x) + S(0.5) : S(-1e6);
      py[p / L::count][p % L::count] = inside ? static_cast<S>(y) + S(0.5) : S(-1e6);
    }
  }

  // the vectors [first, last) holding the tile rows a splat of half-height `half` around row `my` can reach
  void reachable(S my, S half, int& first, int& last) const {
    first = last = 0;
    if (!(half >= S(0))) return;
    if (half == S(INFINITY)) {
      last = vectors;
      return;
    }
    const int row0 = std::max(0, static_cast<int>(std::ceil(my - half - S(0.5))) - y0);
    const int row1 = std::min(size, static_cast<int>(std::floor(my + half - S(0.5))) - y0 + 1);
    if (row0 >= row1) return;
    first = row0 * size / L::count;
    last = std::min(vectors, (row1 * size + L::count - 1) / L::count);
  }
};

template <typename S, int C>
void forward(const S* means2d, const S* conics, const S* opacities, const S* features, const int64_t* ids,
             const int64_t* starts, const int64_t* counts, const Layout& L, S max_alpha, int threads, int64_t splats,
             S* out_features, S* out_transmittance, int32_t* out_last, S* out_half) {
  using Ln = Lanes<S>;
  using V = typename Ln::V;
  using I = typename Ln::I;
  constexpr int W = Ln::count, kVectors = Tile<S>::kMaxVectors;
  half_heights(conics, opacities, splats, threads, out_half);
  const S* half = out_half;
  const int64_t tiles = static_cast<int64_t>(L.images) * L.tiles_x * L.tiles_y;
  parallel_for(tiles, threads, [&](int64_t t) {
    const Tile<S> tile(L, t);
    const V alpha_min = Ln::splat(S(1) / S(255)), transmittance_min = Ln::splat(S(1e-4));
    const V alpha_max = Ln::splat(max_alpha), zero = Ln::splat(S(0)), one = Ln::splat(S(1));
    // per pixel vector: transmittance, still compositing (mask), index of the last splat used, accumulated features
    V T[kVectors], acc[C][kVectors];
    I active[kVectors], last[kVectors];
    bool live[kVectors];  // some lane still composites
    int live_vectors = 0;
    for (int v = 0; v < tile.vectors; ++v) {
      T[v] = one, last[v] = I{};
      for (int l = 0; l < W; ++l) active[v][l] = tile.pix[v * W + l] >= 0 ? -1 : 0;
      live[v] = Ln::any(active[v]);
      live_vectors += live[v];
      for (int ch = 0; ch < C; ++ch) acc[ch][v] = zero;
    }
    const int64_t start = starts[t], count = counts[t];
    // stops once every pixel of the tile is done (gsplat's tile-wide early stop)
    for (int64_t k = 0; k < count && live_vectors > 0; ++k) {
      const int64_t g = ids[start + k];
      const S mx = means2d[2 * g], my = means2d[2 * g + 1];
      const S a = conics[3 * g], b = conics[3 * g + 1], c = conics[3 * g + 2], op = opacities[g];
      int first, end;
      tile.reachable(my, half[g], first, end);
      const I index = I{} + static_cast<typename Ln::Bits>(k + 1);
      S f[C];
      for (int ch = 0; ch < C; ++ch) f[ch] = features[g * C + ch];
      for (int v = first; v < end; ++v) {
        if (!live[v]) continue;
        const V dx = tile.px[v] - mx, dy = tile.py[v] - my;
        const V sigma = S(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy;
        const V raw = op * exp_nonpositive<S>(-sigma);
        const V alpha = raw < alpha_max ? raw : alpha_max;
        const I ok = active[v] & (sigma >= zero) & (raw >= alpha_min);
        const V next = T[v] * (one - alpha);
        const I stop = ok & (next <= transmittance_min);
        const I use = ok & ~stop;
        const V weight = use ? alpha * T[v] : zero;
        T[v] = use ? next : T[v];
        last[v] = use ? index : last[v];
        for (int ch = 0; ch < C; ++ch) acc[ch][v] += weight * f[ch];
        if (Ln::any(stop)) {
          active[v] &= ~stop;
          if (!Ln::any(active[v])) live[v] = false, --live_vectors;
        }
      }
    }
    for (int v = 0; v < tile.vectors; ++v)
      for (int l = 0; l < W; ++l) {
        const int64_t pix = tile.pix[v * W + l];
        if (pix < 0) continue;
        out_transmittance[pix] = T[v][l];
        out_last[pix] = static_cast<int32_t>(last[v][l]);
        for (int ch = 0; ch < C; ++ch) out_features[pix * C + ch] = acc[ch][v][l];
      }
  });
}

template <typename S, int C>
void backward(const S* means2d, const S* conics, const S* opacities, const S* features, const int64_t* ids,
              const int64_t* starts, const int64_t* counts, const Layout& L, S max_alpha, int threads,
              const S* transmittance, const int32_t* last, const S* half, const S* grad_features,
              const S* grad_transmittance, int64_t splats_per_image, S* grad_splats) {
  using Ln = Lanes<S>;
  using V = typename Ln::V;
  using I = typename Ln::I;
  constexpr int W = Ln::count, kVectors = Tile<S>::kMaxVectors;
  constexpr int stride = 6 + C;  // per pair and splat: means2d (2), conics (3), opacity (1), features (C)
  const int64_t tiles = static_cast<int64_t>(L.images) * L.tiles_x * L.tiles_y;
  const int64_t pairs = starts[tiles - 1] + counts[tiles - 1];
  std::vector<S> grad_pairs(static_cast<size_t>(pairs) * stride, S(0));
  parallel_for(tiles, threads, [&](int64_t t) {
    const int64_t count = counts[t];
    if (count == 0) return;
    const Tile<S> tile(L, t);
    const V alpha_min = Ln::splat(S(1) / S(255)), alpha_max = Ln::splat(max_alpha);
    const V zero = Ln::splat(S(0)), one = Ln::splat(S(1));
    // per pixel vector: the transmittance in front of the current splat's successor, how far the pixel's list went,
    // the upstream gradients, and the features of what lies behind the current splat (sum of w f)
    V T[kVectors], g_final[kVectors], g_acc[C][kVectors], behind[C][kVectors];
    I end[kVectors];
    int32_t deepest = 0, vector_deepest[kVectors];
    for (int v = 0; v < tile.vectors; ++v) {
      T[v] = one, g_final[v] = zero, end[v] = I{}, vector_deepest[v] = 0;
      for (int ch = 0; ch < C; ++ch) behind[ch][v] = zero, g_acc[ch][v] = zero;
      for (int l = 0; l < W; ++l) {
        const int64_t pix = tile.pix[v * W + l];
        if (pix < 0) continue;
        T[v][l] = transmittance[pix];
        end[v][l] = last[pix];
        // d T_final / d alpha_k = -T_final / (1 - alpha_k): the upstream gradient of T_final folded in once
        g_final[v][l] = grad_transmittance[pix] * transmittance[pix];
        for (int ch = 0; ch < C; ++ch) g_acc[ch][v][l] = grad_features[pix * C + ch];
        vector_deepest[v] = std::max(vector_deepest[v], last[pix]);
      }
      deepest = std::max(deepest, vector_deepest[v]);
    }
    const int64_t start = starts[t];
    for (int64_t k = deepest - 1; k >= 0; --k) {
      const int64_t g = ids[start + k];
      const S mx = means2d[2 * g], my = means2d[2 * g + 1];
      const S a = conics[3 * g], b = conics[3 * g + 1], c = conics[3 * g + 2], op = opacities[g];
      S f[C];
      for (int ch = 0; ch < C; ++ch) f[ch] = features[g * C + ch];
      const I position = I{} + static_cast<typename Ln::Bits>(k);
      V g_mx = zero, g_my = zero, g_a = zero, g_b = zero, g_c = zero, g_op = zero, g_f[C];
      for (int ch = 0; ch < C; ++ch) g_f[ch] = zero;
      int first, stop;
      tile.reachable(my, half[g], first, stop);
      for (int v = first; v < stop; ++v) {
        if (vector_deepest[v] <= k) continue;  // every list of these pixels ended before this splat
        const V dx = tile.px[v] - mx, dy = tile.py[v] - my;
        const V sigma = S(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy;
        const V falloff = exp_nonpositive<S>(-sigma);
        const V raw = op * falloff;
        const I used = (position < end[v]) & (sigma >= zero) & (raw >= alpha_min);
        const V alpha = raw < alpha_max ? raw : alpha_max;
        const V inverse = one / (one - alpha);
        const V before = used ? T[v] * inverse : T[v];  // transmittance in front of this splat
        const V w = used ? alpha * before : zero;
        V projected = zero, behind_projected = zero;
        for (int ch = 0; ch < C; ++ch) {
          projected += f[ch] * g_acc[ch][v];
          behind_projected += behind[ch][v] * g_acc[ch][v];
        }
        T[v] = before;
        // a clamped alpha (raw >= max_alpha) passes no gradient
        const V g_alpha =
            used & (raw < alpha_max) ? before * projected - (behind_projected + g_final[v]) * inverse : zero;
        g_op += g_alpha * falloff;
        const V g_sigma = -g_alpha * raw;
        g_a += S(0.5) * g_sigma * dx * dx;
        g_b += g_sigma * dx * dy;
        g_c += S(0.5) * g_sigma * dy * dy;
        g_mx -= g_sigma * (a * dx + b * dy);
        g_my -= g_sigma * (b * dx + c * dy);
        for (int ch = 0; ch < C; ++ch) {  // after `behind_projected`, which needs `behind` as it was before this splat
          g_f[ch] += w * g_acc[ch][v];
          behind[ch][v] += w * f[ch];
        }
      }
      S* out = grad_pairs.data() + (start + k) * stride;
      out[0] = Ln::sum(g_mx), out[1] = Ln::sum(g_my), out[2] = Ln::sum(g_a), out[3] = Ln::sum(g_b);
      out[4] = Ln::sum(g_c), out[5] = Ln::sum(g_op);
      for (int ch = 0; ch < C; ++ch) out[6 + ch] = Ln::sum(g_f[ch]);
    }
  });
  // sum each splat's pairs: an image's pairs are contiguous and name only its own splats, so images reduce in
  // parallel, each in a fixed order (the result does not depend on the thread count)
  const int64_t tiles_per_image = static_cast<int64_t>(L.tiles_x) * L.tiles_y;
  parallel_for(L.images, threads, [&](int64_t image) {
    std::fill(grad_splats + image * splats_per_image * stride, grad_splats + (image + 1) * splats_per_image * stride,
              S(0));
    const int64_t first = starts[image * tiles_per_image];
    const int64_t end = starts[(image + 1) * tiles_per_image - 1] + counts[(image + 1) * tiles_per_image - 1];
    for (int64_t pair = first; pair < end; ++pair) {
      S* out = grad_splats + ids[pair] * stride;
      const S* in = grad_pairs.data() + pair * stride;
      for (int j = 0; j < stride; ++j) out[j] += in[j];
    }
  });
}

// gsplat's isect_tiles + sort: which tiles each splat's box [m - r, m + r] touches, as per-tile lists of flat splat
// ids, each list in depth order (ties in id order). Called twice: `ids == nullptr` computes each splat's tile
// rectangle into `rects` and the per-tile counts, then (after the caller allocated sum(counts) ids) the lists, built
// by walking each image's splats in depth order.
template <typename S>
inline void tile_rect(const S* m, const int32_t* r, int tile_size, int tiles_x, int tiles_y, int32_t rect[4]) {
  rect[0] = rect[1] = rect[2] = rect[3] = 0;
  if (r[0] <= 0 || r[1] <= 0) return;
  auto clamp = [](S v, int hi) { return static_cast<int32_t>(std::min(std::max(v, S(0)), static_cast<S>(hi))); };
  rect[0] = clamp(std::floor((m[0] - r[0]) / tile_size), tiles_x);
  rect[1] = clamp(std::ceil((m[0] + r[0]) / tile_size), tiles_x);
  rect[2] = clamp(std::floor((m[1] - r[1]) / tile_size), tiles_y);
  rect[3] = clamp(std::ceil((m[1] + r[1]) / tile_size), tiles_y);
}

// Sort splat ids by depth, ties by id, NaN last (torch's stable sort). float: the depth's bits made monotone
// (negative floats have their bits reversed) above the id in one 64-bit key, then a least-significant-digit radix
// sort on the depth bits (3 passes of 11 bits): stable, so equal depths keep their id order.
inline uint64_t monotone(float depth) {
  if (std::isnan(depth)) return 0xffffffffu;
  const uint32_t bits = std::bit_cast<uint32_t>(depth == 0.0f ? 0.0f : depth);  // -0 sorts with +0, as torch
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}
inline void sort_by_depth(std::vector<int64_t>& order, const float* depths, int64_t first) {
  const size_t m = order.size();
  std::vector<uint64_t> keys(m), sorted(m);
  for (size_t i = 0; i < m; ++i) keys[i] = (monotone(depths[order[i]]) << 32) | static_cast<uint64_t>(order[i] - first);
  for (int shift = 32; shift < 64; shift += 11) {
    size_t position[2048] = {};
    for (const uint64_t key : keys) ++position[(key >> shift) & 2047];
    size_t total = 0;
    for (size_t& slot : position) total += std::exchange(slot, total);
    for (const uint64_t key : keys) sorted[position[(key >> shift) & 2047]++] = key;
    keys.swap(sorted);
  }
  for (size_t i = 0; i < m; ++i) order[i] = first + static_cast<int64_t>(keys[i] & 0xffffffffu);
}
inline void sort_by_depth(std::vector<int64_t>& order, const double* depths, int64_t) {
  auto key = [&](int64_t g) { return std::isnan(depths[g]) ? INFINITY : depths[g]; };
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return key(x) < key(y); });
}

template <typename S>
void intersect(const S* means2d, const int32_t* radii, const S* depths, int images, int64_t n, int tile_size,
               int tiles_x, int tiles_y, int threads, int32_t* rects, int64_t* counts, const int64_t* starts,
               int64_t* ids) {
  const int64_t tiles_per_image = static_cast<int64_t>(tiles_x) * tiles_y;
  parallel_for(images, threads, [&](int64_t image) {
    std::vector<int64_t> cursor(tiles_per_image, 0);
    if (ids == nullptr) {
      for (int64_t g = image * n; g < (image + 1) * n; ++g) {
        int32_t* rect = rects + 4 * g;
        tile_rect(means2d + 2 * g, radii + 2 * g, tile_size, tiles_x, tiles_y, rect);
        for (int ty = rect[2]; ty < rect[3]; ++ty)
          for (int tx = rect[0]; tx < rect[1]; ++tx) ++cursor[static_cast<int64_t>(ty) * tiles_x + tx];
      }
      std::copy(cursor.begin(), cursor.end(), counts + image * tiles_per_image);
      return;
    }
    std::vector<int64_t> order;  // the splats that touch a tile, in depth order
    order.reserve(n);
    for (int64_t g = image * n; g < (image + 1) * n; ++g)
      if (rects[4 * g] < rects[4 * g + 1] && rects[4 * g + 2] < rects[4 * g + 3]) order.push_back(g);
    sort_by_depth(order, depths, image * n);
    std::copy(starts + image * tiles_per_image, starts + (image + 1) * tiles_per_image, cursor.begin());
    for (const int64_t g : order) {
      const int32_t* rect = rects + 4 * g;
      for (int ty = rect[2]; ty < rect[3]; ++ty)
        for (int tx = rect[0]; tx < rect[1]; ++tx) ids[cursor[static_cast<int64_t>(ty) * tiles_x + tx]++] = g;
    }
  });
}

template <typename S>
using Forward = void (*)(const S*, const S*, const S*, const S*, const int64_t*, const int64_t*, const int64_t*,
                         const Layout&, S, int, int64_t, S*, S*, int32_t*, S*);
template <typename S>
using Backward = void (*)(const S*, const S*, const S*, const S*, const int64_t*, const int64_t*, const int64_t*,
                          const Layout&, S, int, const S*, const int32_t*, const S*, const S*, const S*, int64_t, S*);

// the channel count is a template parameter (the per-pixel channel loops unroll); 1..kMaxChannels are instantiated
template <typename S, int... Cs>
Forward<S> forward_for(int channels, std::integer_sequence<int, Cs...>) {
  Forward<S> table[] = {forward<S, Cs + 1>...};
  return channels >= 1 && channels <= kMaxChannels ? table[channels - 1] : nullptr;
}
template <typename S, int... Cs>
Backward<S> backward_for(int channels, std::integer_sequence<int, Cs...>) {
  Backward<S> table[] = {backward<S, Cs + 1>...};
  return channels >= 1 && channels <= kMaxChannels ? table[channels - 1] : nullptr;
}

template <typename S>
int32_t rasterize_forward(const gslrm_abi::RasterizeForwardArgs& a) {
  auto kernel = forward_for<S>(a.channels, std::make_integer_sequence<int, kMaxChannels>{});
  if (kernel == nullptr || a.tile_size < 1 || a.tile_size > kMaxTile) return gslrm_abi::kUnsupported;
  Layout L{a.images, a.width, a.height, a.tile_size, a.tiles_x, a.tiles_y, a.channels};
  kernel(static_cast<const S*>(a.means2d), static_cast<const S*>(a.conics), static_cast<const S*>(a.opacities),
         static_cast<const S*>(a.features), a.ids, a.starts, a.counts, L, static_cast<S>(a.max_alpha), a.threads,
         a.splats, static_cast<S*>(a.out_features), static_cast<S*>(a.out_transmittance), a.out_last,
         static_cast<S*>(a.out_half));
  return gslrm_abi::kOk;
}

template <typename S>
int32_t rasterize_backward(const gslrm_abi::RasterizeBackwardArgs& a) {
  auto kernel = backward_for<S>(a.channels, std::make_integer_sequence<int, kMaxChannels>{});
  if (kernel == nullptr || a.tile_size < 1 || a.tile_size > kMaxTile) return gslrm_abi::kUnsupported;
  Layout L{a.images, a.width, a.height, a.tile_size, a.tiles_x, a.tiles_y, a.channels};
  kernel(static_cast<const S*>(a.means2d), static_cast<const S*>(a.conics), static_cast<const S*>(a.opacities),
         static_cast<const S*>(a.features), a.ids, a.starts, a.counts, L, static_cast<S>(a.max_alpha), a.threads,
         static_cast<const S*>(a.transmittance), a.last, static_cast<const S*>(a.half),
         static_cast<const S*>(a.grad_features), static_cast<const S*>(a.grad_transmittance), a.splats_per_image,
         static_cast<S*>(a.grad_splats));
  return gslrm_abi::kOk;
}

template <typename S>
int32_t intersect_tiles(const gslrm_abi::IntersectArgs& a) {
  intersect<S>(static_cast<const S*>(a.means2d), a.radii, static_cast<const S*>(a.depths), a.images, a.n,
               a.tile_size, a.tiles_x, a.tiles_y, a.threads, a.rects, a.counts, a.starts, a.ids);
  return gslrm_abi::kOk;
}

}  // namespace


GSLRM_EXPORT(gslrm_rasterize_forward, RasterizeForwardArgs, rasterize_forward)
GSLRM_EXPORT(gslrm_rasterize_backward, RasterizeBackwardArgs, rasterize_backward)
GSLRM_EXPORT(gslrm_intersect_tiles, IntersectArgs, intersect_tiles)

// the layout of each argument struct as this build sees it (compiled.py compares it with its own)
extern "C" const char* gslrm_struct_layout(const char* name) {
  using namespace gslrm_abi;
  static const std::string layouts[] = {layout_of_RasterizeForwardArgs(), layout_of_RasterizeBackwardArgs(),
                                        layout_of_IntersectArgs(), layout_of_ProjectForwardArgs(),
                                        layout_of_ProjectBackwardArgs()};
  static const char* names[] = {"RasterizeForwardArgs", "RasterizeBackwardArgs", "IntersectArgs",
                                "ProjectForwardArgs", "ProjectBackwardArgs"};
  for (int i = 0; i < 5; ++i)
    if (std::strcmp(name, names[i]) == 0) return layouts[i].c_str();
  return nullptr;
}

extern "C" int gslrm_rasterize_abi_version() { return 5; }

// the SIMD width this build composites with, in floats (1: the scalar fallback)
extern "C" int gslrm_rasterize_lanes() { return Lanes<float>::count; }

// the -march/-D flags this library was built with (compiled.py rebuilds a cached file built with others)
extern "C" const char* gslrm_build_key() {
  static const char* marker = "gslrm-build-key:" GSLRM_BUILD_KEY;  // compiled.py reads it from the file, too
  return marker + 16;
}
