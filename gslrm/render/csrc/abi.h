// The call boundary between Python (ctypes, gslrm/render/compiled.py) and this library: every exported function
// takes one argument struct, and each struct is declared once, here, as a field list. From that list come the
// struct itself and its layout string (name:offset:size of every field, then the size), which the library exports;
// Python declares the same structs as ctypes.Structure and refuses a library whose layouts differ from its own. A
// field added, removed, retyped or moved on one side only is then an error at load time naming the struct, not a
// call that reads the wrong memory. Each call also carries sizeof of the struct it was built with and its dtype, both
// checked before anything is read.
//
// Pointers are void* where the element type follows `dtype` (0: float32, 1: float64).

#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gslrm_abi {

constexpr int32_t kFloat32 = 0, kFloat64 = 1;
// status codes of every exported call
constexpr int32_t kOk = 0, kUnsupported = 1, kBadStructSize = 2, kBadDtype = 3;

#define GSLRM_RASTERIZE_FORWARD_FIELDS(X)                                                                     \
  X(int64_t, struct_size)                                                                                   \
  X(int32_t, dtype)                                                                                         \
  X(const void*, means2d) X(const void*, conics) X(const void*, opacities) X(const void*, features)          \
  X(const int64_t*, ids) X(const int64_t*, starts) X(const int64_t*, counts)                                \
  X(int32_t, images) X(int32_t, width) X(int32_t, height) X(int32_t, tile_size) X(int32_t, tiles_x)         \
  X(int32_t, tiles_y) X(int32_t, channels) X(double, max_alpha) X(int32_t, threads) X(int64_t, splats)      \
  X(void*, out_features) X(void*, out_transmittance) X(int32_t*, out_last) X(void*, out_half)

#define GSLRM_RASTERIZE_BACKWARD_FIELDS(X)                                                                    \
  X(int64_t, struct_size)                                                                                   \
  X(int32_t, dtype)                                                                                         \
  X(const void*, means2d) X(const void*, conics) X(const void*, opacities) X(const void*, features)          \
  X(const int64_t*, ids) X(const int64_t*, starts) X(const int64_t*, counts)                                \
  X(int32_t, images) X(int32_t, width) X(int32_t, height) X(int32_t, tile_size) X(int32_t, tiles_x)         \
  X(int32_t, tiles_y) X(int32_t, channels) X(double, max_alpha) X(int32_t, threads)                         \
  X(const void*, transmittance) X(const int32_t*, last) X(const void*, half) X(const void*, grad_features)   \
  X(const void*, grad_transmittance) X(int64_t, splats_per_image) X(void*, grad_splats)

#define GSLRM_INTERSECT_FIELDS(X)                                                                             \
  X(int64_t, struct_size)                                                                                   \
  X(int32_t, dtype)                                                                                         \
  X(const void*, means2d) X(const int32_t*, radii) X(const void*, depths) X(int32_t, images) X(int64_t, n)   \
  X(int32_t, tile_size) X(int32_t, tiles_x) X(int32_t, tiles_y) X(int32_t, threads) X(int32_t*, rects)      \
  X(int64_t*, counts) X(const int64_t*, starts) X(int64_t*, ids)

#define GSLRM_PROJECT_FORWARD_FIELDS(X)                                                                       \
  X(int64_t, struct_size)                                                                                   \
  X(int32_t, dtype)                                                                                         \
  X(const void*, means) X(const void*, quats) X(const void*, scales) X(const void*, opacities)               \
  X(const void*, sh0) X(const void*, viewmats) X(const void*, intrinsics) X(int32_t, scenes) X(int32_t, views) \
  X(int64_t, gaussians) X(int32_t, width) X(int32_t, height) X(double, eps2d) X(double, near_plane)          \
  X(double, far_plane) X(int32_t, threads) X(void*, means2d) X(void*, conics) X(void*, features)            \
  X(void*, depths) X(int32_t*, radii)

#define GSLRM_PROJECT_BACKWARD_FIELDS(X)                                                                      \
  X(int64_t, struct_size)                                                                                   \
  X(int32_t, dtype)                                                                                         \
  X(const void*, means) X(const void*, quats) X(const void*, scales) X(const void*, sh0)                    \
  X(const void*, viewmats) X(const void*, intrinsics) X(const int32_t*, radii) X(int32_t, scenes)           \
  X(int32_t, views) X(int64_t, gaussians) X(int32_t, width) X(int32_t, height) X(double, eps2d)             \
  X(double, near_plane) X(double, far_plane) X(int32_t, threads) X(const void*, grad_means2d)               \
  X(const void*, grad_conics) X(const void*, grad_features) X(void*, grad_means) X(void*, grad_quats)       \
  X(void*, grad_scales) X(void*, grad_sh0)

#define GSLRM_DECLARE_FIELD(T, name) T name;
#define GSLRM_LAYOUT_FIELD(T, name) \
  out += std::string(#name) + ":" + std::to_string(offsetof(Self, name)) + ":" + std::to_string(sizeof(T)) + ";";
#define GSLRM_ARGS(Name, FIELDS)                   \
  struct Name {                                    \
    FIELDS(GSLRM_DECLARE_FIELD)                    \
  };                                               \
  inline std::string layout_of_##Name() {          \
    using Self = Name;                             \
    std::string out;                               \
    FIELDS(GSLRM_LAYOUT_FIELD)                     \
    return out + "size:" + std::to_string(sizeof(Self)); \
  }

GSLRM_ARGS(RasterizeForwardArgs, GSLRM_RASTERIZE_FORWARD_FIELDS)
GSLRM_ARGS(RasterizeBackwardArgs, GSLRM_RASTERIZE_BACKWARD_FIELDS)
GSLRM_ARGS(IntersectArgs, GSLRM_INTERSECT_FIELDS)
GSLRM_ARGS(ProjectForwardArgs, GSLRM_PROJECT_FORWARD_FIELDS)
GSLRM_ARGS(ProjectBackwardArgs, GSLRM_PROJECT_BACKWARD_FIELDS)

// the checks every exported call makes before it reads anything else
template <typename Args>
inline int32_t check(const Args* args) {
  if (args == nullptr || args->struct_size != static_cast<int64_t>(sizeof(Args))) return kBadStructSize;
  if (args->dtype != kFloat32 && args->dtype != kFloat64) return kBadDtype;
  return kOk;
}

}  // namespace gslrm_abi

// an exported call: the argument struct checked (size, dtype), then the float or double kernel ``body<S>``
#define GSLRM_EXPORT(name, Args, body)                                                          \
  extern "C" int32_t name(const gslrm_abi::Args* args) {                                        \
    if (const int32_t status = gslrm_abi::check(args); status != gslrm_abi::kOk) return status; \
    return args->dtype == gslrm_abi::kFloat64 ? body<double>(*args) : body<float>(*args);       \
  }
