// Compiled CPU rasterization of depth-sorted 2D splats, forward and backward, with gsplat's rules
// (isect_tiles, rasterize_to_pixels_fwd/bwd): per pixel, front to back,
//     sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,           skipped if sigma < 0
//     alpha = min(max_alpha, opacity exp(-sigma)),       skipped if opacity exp(-sigma) < 1/255
//     stop (exclusive) at the first splat after which the transmittance would be <= 1e-4
// Pixel centres at +0.5. The work unit is one tile of one image: tiles are independent, so threads (OpenMP) take
// tiles dynamically and never write the same memory. The loops are splat-major over the tile's pixels: the inner
// pixel loop is branch-free and vectorises, and it covers only the tile rows the splat can reach with alpha >= 1/255
// and where some pixel is still compositing (which changes no result).
//
// The backward walks each pixel's list back to front, recovering the transmittance by division as gsplat's kernel
// does, writes each (tile, splat) pair's gradient into its own slot, then sums the slots per splat in a fixed order
// (the result does not depend on the thread count).
//
// Plain C ABI (called through ctypes): no Python or torch headers, so it compiles in seconds with any g++.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace {

constexpr int kMaxTile = 32;  // pixels per tile side supported (tile_size <= 32)
constexpr int kMaxPixels = kMaxTile * kMaxTile;
constexpr int kMaxChannels = 8;

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

// exp(x) for x <= 0 that inlines into the pixel loops (a library call there spills every vector register):
// x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series (degree 7 for float: truncation 6e-9, below
// float's rounding; degree 13 for double: 4e-18), times 2^n assembled in the exponent bits. Inputs below the
// smallest normal's exponent are clamped there (exp(-87) ~ 1e-38 in float), far below the 1/255 alpha cut-off.
template <typename S>
struct ExpTraits;
template <>
struct ExpTraits<float> {
  using Bits = int32_t;
  static constexpr float lowest = -87.0f;
  static constexpr int degree = 7, mantissa = 23, bias = 127;
};
template <>
struct ExpTraits<double> {
  using Bits = int64_t;
  static constexpr double lowest = -708.0;
  static constexpr int degree = 13, mantissa = 52, bias = 1023;
};

template <typename S>
constexpr S factorial(int k) {
  return k <= 1 ? S(1) : S(k) * factorial<S>(k - 1);
}

template <typename S>
inline S exp_nonpositive(S x) {
  using E = ExpTraits<S>;
  x = x > E::lowest ? x : E::lowest;
  x = x < S(0) ? x : S(0);
  const S n = std::nearbyint(x * S(1.4426950408889634));
  const S r = (x - n * S(0.693145751953125)) - n * S(1.4286068203094173e-06);  // ln 2 in two parts (Cody-Waite)
  S series = S(1) / factorial<S>(E::degree);  // Horner on the coefficients 1/k! (no division in the loop)
  for (int k = E::degree - 1; k >= 0; --k) series = series * r + S(1) / factorial<S>(k);
  const auto exponent = static_cast<typename E::Bits>(static_cast<typename E::Bits>(n) + E::bias) << E::mantissa;
  return series * std::bit_cast<S>(exponent);
}

// The tile rows [first, last) where the splat can reach alpha >= 1/255: opacity exp(-sigma) >= 1/255 means
// sigma <= ln(255 opacity), an ellipse whose half-height is sqrt(2 ln(255 opacity) cov_yy), cov_yy = a / (ac - b^2).
// Rows outside it would be skipped by the alpha test anyway, so leaving them out changes no result; the margin
// keeps the bound a superset under rounding.
template <typename S>
inline void reachable_rows(S my, S a, S b, S c, S opacity, int y0, int size, int& first, int& last) {
  const S reach = std::log(S(255) * opacity);
  const S det = a * c - b * b;
  if (!(reach >= S(0)) || !(det > S(0))) {  // never visible (or a degenerate conic: keep every row)
    first = 0, last = reach >= S(0) ? size : 0;
    return;
  }
  const S half = std::sqrt(S(2) * reach * a / det) * S(1.0001) + S(1e-3);
  first = std::max(0, static_cast<int>(std::ceil(my - half - S(0.5))) - y0);
  last = std::min(size, static_cast<int>(std::floor(my + half - S(0.5))) - y0 + 1);
}

template <typename S>
struct Tile {
  int image, x0, y0, pixels, size;
  S px[kMaxPixels], py[kMaxPixels];  // pixel centres

  Tile(const Layout& L, int64_t t) {
    int64_t per_image = static_cast<int64_t>(L.tiles_x) * L.tiles_y;
    image = static_cast<int>(t / per_image);
    int within = static_cast<int>(t % per_image);
    size = L.tile_size;
    x0 = (within % L.tiles_x) * size;
    y0 = (within / L.tiles_x) * size;
    pixels = size * size;
    for (int p = 0; p < pixels; ++p) {
      px[p] = static_cast<S>(x0 + p % size) + S(0.5);
      py[p] = static_cast<S>(y0 + p / size) + S(0.5);
    }
  }
  // flat image pixel index of tile pixel p, or -1 when it lies outside the (cropped) image
  int64_t pixel(const Layout& L, int p) const {
    int x = x0 + p % size, y = y0 + p / size;
    if (x >= L.width || y >= L.height) return -1;
    return (static_cast<int64_t>(image) * L.height + y) * L.width + x;
  }
};

template <typename S, int C>
void forward(const S* means2d, const S* conics, const S* opacities, const S* features, const int64_t* ids,
             const int64_t* starts, const int64_t* counts, const Layout& L, S max_alpha, int threads, S* out_features,
             S* out_transmittance, int32_t* out_last) {
  int64_t tiles = static_cast<int64_t>(L.images) * L.tiles_x * L.tiles_y;
  parallel_for(tiles, threads, [&, max_alpha](int64_t t) {
    // constants as locals: captured by reference they are re-loaded (as gathers) inside the vector loop
    const S alpha_min = S(1) / S(255), transmittance_min = S(1e-4), alpha_max = max_alpha;
    const Tile<S> tile(L, t);
    const int P = tile.pixels;
    // per-pixel state as lanes of the same type (masks as 0/1), so the pixel loop is one branch-free vector loop
    alignas(64) S px[kMaxPixels], py[kMaxPixels], T[kMaxPixels], active[kMaxPixels], last[kMaxPixels];
    alignas(64) S weight[kMaxPixels], acc[C][kMaxPixels];
    for (int p = 0; p < P; ++p) {
      px[p] = tile.px[p], py[p] = tile.py[p], T[p] = S(1), active[p] = S(1), last[p] = S(0);
      for (int c = 0; c < C; ++c) acc[c][p] = S(0);
    }
    const int64_t start = starts[t], count = counts[t];
    int live = P, row_live[kMaxTile];  // pixels still compositing, in the tile and per row
    for (int r = 0; r < tile.size; ++r) row_live[r] = tile.size;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t g = ids[start + k];
      const S mx = means2d[2 * g], my = means2d[2 * g + 1];
      const S a = conics[3 * g], b = conics[3 * g + 1], c = conics[3 * g + 2], op = opacities[g];
      const S index = static_cast<S>(k + 1);
      int first, last_row;
      reachable_rows(my, a, b, c, op, tile.y0, tile.size, first, last_row);
      while (first < last_row && row_live[first] == 0) ++first;
      while (first < last_row && row_live[last_row - 1] == 0) --last_row;
      if (first >= last_row) continue;
      for (int r = first; r < last_row; ++r) {  // count the pixels that stop, per row
        S stopped = S(0);
#pragma omp simd reduction(+ : stopped)
      for (int p = r * tile.size; p < (r + 1) * tile.size; ++p) {
        const S dx = px[p] - mx, dy = py[p] - my;
        const S sigma = S(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy;
        const S raw = op * exp_nonpositive(-sigma);
        const S alpha = raw < alpha_max ? raw : alpha_max;
        const bool ok = (active[p] > S(0)) & (sigma >= S(0)) & (raw >= alpha_min);
        const S next = T[p] * (S(1) - alpha);
        const bool stop = ok & (next <= transmittance_min);
        const bool use = ok & !stop;
        active[p] = stop ? S(0) : active[p];
        weight[p] = use ? alpha * T[p] : S(0);
        T[p] = use ? next : T[p];
        last[p] = use ? index : last[p];
        stopped += stop ? S(1) : S(0);
      }
        row_live[r] -= static_cast<int>(stopped);
        live -= static_cast<int>(stopped);
      }
      const S* f = features + g * C;
      for (int ch = 0; ch < C; ++ch) {
        const S value = f[ch];
#pragma omp simd
        for (int p = first * tile.size; p < last_row * tile.size; ++p) acc[ch][p] += weight[p] * value;
      }
      if (live == 0) break;  // every pixel of the tile is done (gsplat's tile-wide early stop)
    }
    for (int p = 0; p < P; ++p) {
      const int64_t pix = tile.pixel(L, p);
      if (pix < 0) continue;
      out_transmittance[pix] = T[p];
      out_last[pix] = static_cast<int32_t>(last[p]);
      for (int ch = 0; ch < C; ++ch) out_features[pix * C + ch] = acc[ch][p];
    }
  });
}

template <typename S, int C>
void backward(const S* means2d, const S* conics, const S* opacities, const S* features, const int64_t* ids,
              const int64_t* starts, const int64_t* counts, const Layout& L, S max_alpha, int threads,
              const S* transmittance, const int32_t* last, const S* grad_features, const S* grad_transmittance,
              int64_t splats_per_image, S* grad_splats) {
  constexpr int stride = 6 + C;  // per pair and splat: means2d (2), conics (3), opacity (1), features (C)
  const int64_t tiles = static_cast<int64_t>(L.images) * L.tiles_x * L.tiles_y;
  const int64_t pairs = starts[tiles - 1] + counts[tiles - 1];
  std::vector<S> grad_pairs(static_cast<size_t>(pairs) * stride, S(0));
  parallel_for(tiles, threads, [&, max_alpha](int64_t t) {
    const S alpha_min = S(1) / S(255), alpha_max = max_alpha;  // locals: see forward
    const int64_t count = counts[t];
    if (count == 0) return;
    const Tile<S> tile(L, t);
    const int P = tile.pixels;
    // per pixel: the transmittance in front of the current splat's successor, the features of what lies behind the
    // current splat (sum of w f), the upstream gradients and how far the pixel's list went
    alignas(64) S px[kMaxPixels], py[kMaxPixels], T[kMaxPixels], end[kMaxPixels], g_final[kMaxPixels];
    alignas(64) S behind[C][kMaxPixels], g_acc[C][kMaxPixels], weight[kMaxPixels];
    int32_t deepest = 0, row_deepest[kMaxTile] = {};
    for (int p = 0; p < P; ++p) {
      const int64_t pix = tile.pixel(L, p);
      px[p] = tile.px[p], py[p] = tile.py[p];
      for (int ch = 0; ch < C; ++ch) behind[ch][p] = S(0), g_acc[ch][p] = S(0);
      T[p] = S(1), end[p] = S(0), g_final[p] = S(0);
      if (pix < 0) continue;
      T[p] = transmittance[pix];
      end[p] = static_cast<S>(last[pix]);
      // d T_final / d alpha_k = -T_final / (1 - alpha_k): the upstream gradient of T_final folded in once
      g_final[p] = grad_transmittance[pix] * transmittance[pix];
      for (int ch = 0; ch < C; ++ch) g_acc[ch][p] = grad_features[pix * C + ch];
      deepest = std::max(deepest, last[pix]);
      row_deepest[p / tile.size] = std::max(row_deepest[p / tile.size], last[pix]);
    }
    const int64_t start = starts[t];
    for (int64_t k = deepest - 1; k >= 0; --k) {
      const int64_t g = ids[start + k];
      const S mx = means2d[2 * g], my = means2d[2 * g + 1];
      const S a = conics[3 * g], b = conics[3 * g + 1], c = conics[3 * g + 2], op = opacities[g];
      S f[C];
      for (int ch = 0; ch < C; ++ch) f[ch] = features[g * C + ch];
      const S position = static_cast<S>(k);
      S g_mx = 0, g_my = 0, g_a = 0, g_b = 0, g_c = 0, g_op = 0;
      int first, last_row;
      reachable_rows(my, a, b, c, op, tile.y0, tile.size, first, last_row);
      while (first < last_row && row_deepest[first] <= k) ++first;  // rows whose lists ended before this splat
      while (first < last_row && row_deepest[last_row - 1] <= k) --last_row;
      const int p0 = first * tile.size, p1 = std::max(first, last_row) * tile.size;
#pragma omp simd reduction(+ : g_mx, g_my, g_a, g_b, g_c, g_op)
      for (int p = p0; p < p1; ++p) {
        const S dx = px[p] - mx, dy = py[p] - my;
        const S sigma = S(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy;
        const S falloff = exp_nonpositive(-sigma);
        const S raw = op * falloff;
        const bool used = (position < end[p]) & (sigma >= S(0)) & (raw >= alpha_min);
        const S alpha = raw < alpha_max ? raw : alpha_max;
        const S inverse = S(1) / (S(1) - alpha);
        const S before = used ? T[p] * inverse : T[p];  // transmittance in front of this splat
        const S w = used ? alpha * before : S(0);
        S projected = 0, behind_projected = 0;
        for (int ch = 0; ch < C; ++ch) {
          projected += f[ch] * g_acc[ch][p];
          behind_projected += behind[ch][p] * g_acc[ch][p];
        }
        weight[p] = w;
        T[p] = before;
        // a clamped alpha (raw >= max_alpha) passes no gradient
        const S g_alpha =
            used & (raw < alpha_max) ? before * projected - (behind_projected + g_final[p]) * inverse : S(0);
        g_op += g_alpha * falloff;
        const S g_sigma = -g_alpha * raw;
        g_a += S(0.5) * g_sigma * dx * dx;
        g_b += g_sigma * dx * dy;
        g_c += S(0.5) * g_sigma * dy * dy;
        g_mx -= g_sigma * (a * dx + b * dy);
        g_my -= g_sigma * (b * dx + c * dy);
      }
      S g_f[C];
      for (int ch = 0; ch < C; ++ch) {  // after the loop above, which reads `behind` as it was before this splat
        S sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int p = p0; p < p1; ++p) {
          sum += weight[p] * g_acc[ch][p];
          behind[ch][p] += weight[p] * f[ch];
        }
        g_f[ch] = sum;
      }
      S* out = grad_pairs.data() + (start + k) * stride;
      out[0] = g_mx, out[1] = g_my, out[2] = g_a, out[3] = g_b, out[4] = g_c, out[5] = g_op;
      for (int ch = 0; ch < C; ++ch) out[6 + ch] = g_f[ch];
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
// ids, each list in depth order (ties in id order). Called twice: `ids == nullptr` fills the per-tile counts, then
// (after the caller allocated sum(counts) ids) the lists, built by walking each image's splats in depth order.
template <typename S>
inline bool tile_rect(const S* m, const int32_t* r, int tile_size, int tiles_x, int tiles_y, int rect[4]) {
  if (r[0] <= 0 || r[1] <= 0) return false;
  auto clamp = [](S v, int hi) { return static_cast<int>(std::min(std::max(v, S(0)), static_cast<S>(hi))); };
  rect[0] = clamp(std::floor((m[0] - r[0]) / tile_size), tiles_x);
  rect[1] = clamp(std::ceil((m[0] + r[0]) / tile_size), tiles_x);
  rect[2] = clamp(std::floor((m[1] - r[1]) / tile_size), tiles_y);
  rect[3] = clamp(std::ceil((m[1] + r[1]) / tile_size), tiles_y);
  return true;
}

template <typename S>
void intersect(const S* means2d, const int32_t* radii, const S* depths, int images, int64_t n, int tile_size,
               int tiles_x, int tiles_y, int threads, int64_t* counts, const int64_t* starts, int64_t* ids) {
  const int64_t tiles_per_image = static_cast<int64_t>(tiles_x) * tiles_y;
  parallel_for(images, threads, [&](int64_t image) {
    std::vector<int64_t> order(n);
    for (int64_t i = 0; i < n; ++i) order[i] = image * n + i;
    std::vector<int64_t> cursor(tiles_per_image, 0);
    if (ids != nullptr) {
      auto key = [&](int64_t g) { return std::isnan(depths[g]) ? S(INFINITY) : depths[g]; };  // NaN last, as torch
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return key(x) < key(y); });
      std::copy(starts + image * tiles_per_image, starts + (image + 1) * tiles_per_image, cursor.begin());
    }
    for (int64_t g : order) {
      int rect[4];
      if (!tile_rect(means2d + 2 * g, radii + 2 * g, tile_size, tiles_x, tiles_y, rect)) continue;
      for (int ty = rect[2]; ty < rect[3]; ++ty)
        for (int tx = rect[0]; tx < rect[1]; ++tx) {
          const int64_t tile = static_cast<int64_t>(ty) * tiles_x + tx;
          if (ids == nullptr)
            ++cursor[tile];
          else
            ids[cursor[tile]++] = g;
        }
    }
    if (ids == nullptr) std::copy(cursor.begin(), cursor.end(), counts + image * tiles_per_image);
  });
}

template <typename S>
using Forward = void (*)(const S*, const S*, const S*, const S*, const int64_t*, const int64_t*, const int64_t*,
                         const Layout&, S, int, S*, S*, int32_t*);
template <typename S>
using Backward = void (*)(const S*, const S*, const S*, const S*, const int64_t*, const int64_t*, const int64_t*,
                          const Layout&, S, int, const S*, const int32_t*, const S*, const S*, int64_t, S*);

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

}  // namespace

#define GSLRM_EXPORT(S, suffix)                                                                                      \
  extern "C" int gslrm_rasterize_forward_##suffix(                                                                   \
      const S* means2d, const S* conics, const S* opacities, const S* features, const int64_t* ids,                \
      const int64_t* starts, const int64_t* counts, int images, int width, int height, int tile_size, int tiles_x,  \
      int tiles_y, int channels, double max_alpha, int threads, S* out_features, S* out_transmittance,             \
      int32_t* out_last) {                                                                                           \
    auto kernel = forward_for<S>(channels, std::make_integer_sequence<int, kMaxChannels>{});                        \
    if (kernel == nullptr || tile_size < 1 || tile_size > kMaxTile) return 1;                                       \
    Layout L{images, width, height, tile_size, tiles_x, tiles_y, channels};                                        \
    kernel(means2d, conics, opacities, features, ids, starts, counts, L, static_cast<S>(max_alpha), threads,       \
           out_features, out_transmittance, out_last);                                                              \
    return 0;                                                                                                        \
  }                                                                                                                  \
  extern "C" int gslrm_rasterize_backward_##suffix(                                                                  \
      const S* means2d, const S* conics, const S* opacities, const S* features, const int64_t* ids,                \
      const int64_t* starts, const int64_t* counts, int images, int width, int height, int tile_size, int tiles_x,  \
      int tiles_y, int channels, double max_alpha, int threads, const S* transmittance, const int32_t* last,       \
      const S* grad_features, const S* grad_transmittance, int64_t splats_per_image, S* grad_splats) {            \
    auto kernel = backward_for<S>(channels, std::make_integer_sequence<int, kMaxChannels>{});                       \
    if (kernel == nullptr || tile_size < 1 || tile_size > kMaxTile) return 1;                                       \
    Layout L{images, width, height, tile_size, tiles_x, tiles_y, channels};                                        \
    kernel(means2d, conics, opacities, features, ids, starts, counts, L, static_cast<S>(max_alpha), threads,       \
           transmittance, last, grad_features, grad_transmittance, splats_per_image, grad_splats);                   \
    return 0;                                                                                                        \
  }

GSLRM_EXPORT(float, f32)
GSLRM_EXPORT(double, f64)

#define GSLRM_EXPORT_INTERSECT(S, suffix)                                                                            \
  extern "C" void gslrm_intersect_tiles_##suffix(const S* means2d, const int32_t* radii, const S* depths, int images, \
                                                 int64_t n, int tile_size, int tiles_x, int tiles_y, int threads,    \
                                                 int64_t* counts, const int64_t* starts, int64_t* ids) {             \
    intersect<S>(means2d, radii, depths, images, n, tile_size, tiles_x, tiles_y, threads, counts, starts, ids);       \
  }

GSLRM_EXPORT_INTERSECT(float, f32)
GSLRM_EXPORT_INTERSECT(double, f64)

extern "C" int gslrm_rasterize_abi_version() { return 2; }
