// Compiled projection of 3D Gaussians to 2D splats, forward and backward: the same mathematics as gsplat's PyTorch
// reference (gsplat/cuda/_torch_impl.py: _quat_scale_to_covar_preci, _world_to_cam, _persp_proj,
// _fully_fused_projection), then gslrm/render/projection.py's opacity-aware radii and SH degree 0 colours:
//     R = rotation(q / |q|), Sigma = R diag(s)^2 R^T                         once per Gaussian
//     m_c = W mu + t, Sigma_c = W Sigma W^T                                    per view (viewmat [W t])
//     J = [[fx/z, 0, -fx x'/z^2], [0, fy/z, -fy y'/z^2]], x' = z clamp(x/z, -lim_x-, lim_x+) (gsplat's frustum clamp)
//     cov2d = J Sigma_c J^T + eps2d I, conic = inverse(cov2d) as (a, b, c), det clamped at 1e-10
//     means2d = (fx x + cx z) / z, (fy y + cy z) / z; depth = z; rgb = max(C0 sh0 + 1/2, 0)
// The backward is the chain rule of those lines, written out (gradients for means, quaternions, scales and the SH
// coefficients; none for the cameras). Splats with radius 0 (culled) get none: the rasteriser gives them none either.
// The work unit is a block of Gaussians of one scene with all its views, so the backward sums over views without
// atomics, in a fixed order (the result does not depend on the thread count).

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "abi.h"

namespace {

constexpr double kShC0 = 0.28209479177387814;  // Y_0^0
constexpr int64_t kBlock = 256;                // Gaussians per work unit

template <typename F>
void parallel_blocks(int64_t items, int threads, F&& work) {
  threads = std::max(1, static_cast<int>(std::min<int64_t>(threads, items)));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t item = 0; item < items; ++item) work(item);
}

struct Settings {
  int scenes, views, width, height;
  int64_t gaussians;  // per scene
  double eps2d, near_plane, far_plane;
};

// rotation of the normalised quaternion (w, x, y, z)
template <typename S>
inline void rotation(const S q[4], S R[3][3]) {
  const S w = q[0], x = q[1], y = q[2], z = q[3];
  R[0][0] = 1 - 2 * (y * y + z * z), R[0][1] = 2 * (x * y - w * z), R[0][2] = 2 * (x * z + w * y);
  R[1][0] = 2 * (x * y + w * z), R[1][1] = 1 - 2 * (x * x + z * z), R[1][2] = 2 * (y * z - w * x);
  R[2][0] = 2 * (x * z - w * y), R[2][1] = 2 * (y * z + w * x), R[2][2] = 1 - 2 * (x * x + y * y);
}

// The per-Gaussian part: normalised quaternion, R, M = R diag(s) and Sigma = M M^T.
template <typename S>
struct Shape {
  S norm, q[4], R[3][3], M[3][3], sigma[3][3];

  Shape(const S* quat, const S* scale) {
    norm = std::max(std::sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]),
                    S(1e-12));  // F.normalize's eps
    for (int i = 0; i < 4; ++i) q[i] = quat[i] / norm;
    rotation(q, R);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) M[i][j] = R[i][j] * scale[j];
    for (int i = 0; i < 3; ++i)
      for (int k = 0; k < 3; ++k) sigma[i][k] = M[i][0] * M[k][0] + M[i][1] * M[k][1] + M[i][2] * M[k][2];
  }
};

// One Gaussian seen by one camera: everything the forward computes and the backward reuses.
template <typename S>
struct View {
  S W[3][3], mc[3], sigma_c[3][3], fx, fy, cx, cy;
  S txc, tyc, ux_clamped, uy_clamped;
  bool x_inside, y_inside;  // the frustum clamp let x/z (y/z) through
  S J[2][3], cov[3], det_raw, det;  // cov2d as (c00, c01, c11) after eps2d

  View(const Shape<S>& shape, const S* mean, const S* viewmat, const S* intrinsics, const Settings& s) {
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) W[i][j] = viewmat[4 * i + j];
      mc[i] = W[i][0] * mean[0] + W[i][1] * mean[1] + W[i][2] * mean[2] + viewmat[4 * i + 3];
    }
    S A[3][3];  // W Sigma
    for (int i = 0; i < 3; ++i)
      for (int k = 0; k < 3; ++k)
        A[i][k] = W[i][0] * shape.sigma[0][k] + W[i][1] * shape.sigma[1][k] + W[i][2] * shape.sigma[2][k];
    for (int i = 0; i < 3; ++i)
      for (int l = 0; l < 3; ++l) sigma_c[i][l] = A[i][0] * W[l][0] + A[i][1] * W[l][1] + A[i][2] * W[l][2];
    fx = intrinsics[0], fy = intrinsics[1], cx = intrinsics[2], cy = intrinsics[3];
    const S tx = mc[0], ty = mc[1], tz = mc[2];
    const S tan_fovx = S(0.5) * s.width / fx, tan_fovy = S(0.5) * s.height / fy;
    const S lim_x_pos = (s.width - cx) / fx + S(0.3) * tan_fovx, lim_x_neg = cx / fx + S(0.3) * tan_fovx;
    const S lim_y_pos = (s.height - cy) / fy + S(0.3) * tan_fovy, lim_y_neg = cy / fy + S(0.3) * tan_fovy;
    const S ux = tx / tz, uy = ty / tz;
    x_inside = ux >= -lim_x_neg && ux <= lim_x_pos;  // torch's clamp passes the gradient at the bounds
    y_inside = uy >= -lim_y_neg && uy <= lim_y_pos;
    ux_clamped = std::min(std::max(ux, -lim_x_neg), lim_x_pos);
    uy_clamped = std::min(std::max(uy, -lim_y_neg), lim_y_pos);
    txc = tz * ux_clamped, tyc = tz * uy_clamped;
    const S tz2 = tz * tz;
    J[0][0] = fx / tz, J[0][1] = 0, J[0][2] = -fx * txc / tz2;
    J[1][0] = 0, J[1][1] = fy / tz, J[1][2] = -fy * tyc / tz2;
    S B[2][3];  // J Sigma_c
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 3; ++k)
        B[i][k] = J[i][0] * sigma_c[0][k] + J[i][1] * sigma_c[1][k] + J[i][2] * sigma_c[2][k];
    const S c00 = B[0][0] * J[0][0] + B[0][1] * J[0][1] + B[0][2] * J[0][2];
    const S c01 = B[0][0] * J[1][0] + B[0][1] * J[1][1] + B[0][2] * J[1][2];
    const S c11 = B[1][0] * J[1][0] + B[1][1] * J[1][1] + B[1][2] * J[1][2];
    cov[0] = c00 + S(s.eps2d), cov[1] = c01, cov[2] = c11 + S(s.eps2d);
    det_raw = cov[0] * cov[2] - cov[1] * cov[1];
    det = std::max(det_raw, S(1e-10));
  }
};

// gsplat's 3.33-sigma box, then projection.py's opacity-aware one (_tight_radii): 0 where culled
template <typename S>
inline void radii_of(const View<S>& v, const S means2d[2], const S conic[3], S opacity, const Settings& s,
                     int32_t out[2]) {
  out[0] = out[1] = 0;
  const S tz = v.mc[2];
  const S rx = std::ceil(S(3.33) * std::sqrt(v.cov[0])), ry = std::ceil(S(3.33) * std::sqrt(v.cov[2]));
  if (!(v.det > 0 && tz > S(s.near_plane) && tz < S(s.far_plane))) return;
  if (!(means2d[0] + rx > 0 && means2d[0] - rx < s.width && means2d[1] + ry > 0 && means2d[1] - ry < s.height)) return;
  if (!(rx > 0 && ry > 0 && opacity >= S(1) / S(255))) return;  // int cast of the radii: > 0 means >= 1
  const S a = conic[0], b = conic[1], c = conic[2];
  const S inverse_det = S(1) / std::max(a * c - b * b, S(1e-20));
  const S sx = std::sqrt(std::max(c * inverse_det, S(0))), sy = std::sqrt(std::max(a * inverse_det, S(0)));
  const S extent = std::min(std::sqrt(S(2) * std::log(std::max(opacity * S(255), S(1)))), S(3.33));
  const S tx = std::ceil(extent * sx), ty = std::ceil(extent * sy);
  const bool inside = means2d[0] + tx > 0 && means2d[0] - tx < s.width && means2d[1] + ty > 0 &&
                      means2d[1] - ty < s.height;
  if (!inside || !(tx > 0 || ty > 0)) return;
  out[0] = static_cast<int32_t>(tx), out[1] = static_cast<int32_t>(ty);
}

template <typename S>
void forward(const S* means, const S* quats, const S* scales, const S* opacities, const S* sh0, const S* viewmats,
             const S* intrinsics, const Settings& s, int threads, S* out_means2d, S* out_conics, S* out_features,
             S* out_depths, int32_t* out_radii) {
  const int64_t blocks = (s.gaussians + kBlock - 1) / kBlock, n = s.gaussians;
  parallel_blocks(s.scenes * blocks, threads, [&](int64_t unit) {
    const int64_t scene = unit / blocks, first = scene * n + (unit % blocks) * kBlock;
    for (int64_t g = first; g < std::min(first + kBlock, (scene + 1) * n); ++g) {
      const Shape<S> shape(quats + 4 * g, scales + 3 * g);
      S rgb[3];
      for (int ch = 0; ch < 3; ++ch) rgb[ch] = std::max(S(kShC0) * sh0[3 * g + ch] + S(0.5), S(0));
      for (int v = 0; v < s.views; ++v) {
        const int64_t camera = scene * s.views + v, out = (camera * n) + (g - scene * n);
        const View<S> view(shape, means + 3 * g, viewmats + 16 * camera, intrinsics + 4 * camera, s);
        const S tz = view.mc[2];
        S* m2 = out_means2d + 2 * out;
        m2[0] = (view.fx * view.mc[0] + view.cx * tz) / tz;
        m2[1] = (view.fy * view.mc[1] + view.cy * tz) / tz;
        S* conic = out_conics + 3 * out;
        conic[0] = view.cov[2] / view.det, conic[1] = -view.cov[1] / view.det, conic[2] = view.cov[0] / view.det;
        S* f = out_features + 4 * out;
        f[0] = rgb[0], f[1] = rgb[1], f[2] = rgb[2], f[3] = tz;
        out_depths[out] = tz;
        radii_of(view, m2, conic, opacities[g], s, out_radii + 2 * out);
      }
    }
  });
}

template <typename S>
void backward(const S* means, const S* quats, const S* scales, const S* sh0, const S* viewmats, const S* intrinsics,
              const int32_t* radii, const Settings& s, int threads, const S* grad_means2d, const S* grad_conics,
              const S* grad_features, S* grad_means, S* grad_quats, S* grad_scales, S* grad_sh0) {
  const int64_t blocks = (s.gaussians + kBlock - 1) / kBlock, n = s.gaussians;
  parallel_blocks(s.scenes * blocks, threads, [&](int64_t unit) {
    const int64_t scene = unit / blocks, first = scene * n + (unit % blocks) * kBlock;
    for (int64_t g = first; g < std::min(first + kBlock, (scene + 1) * n); ++g) {
      const Shape<S> shape(quats + 4 * g, scales + 3 * g);
      S g_mean[3] = {0, 0, 0}, g_sigma[3][3] = {}, g_rgb[3] = {0, 0, 0};
      for (int v = 0; v < s.views; ++v) {
        const int64_t camera = scene * s.views + v, out = (camera * n) + (g - scene * n);
        if (radii[2 * out] <= 0 && radii[2 * out + 1] <= 0) continue;  // culled: in no tile, no gradient
        const View<S> view(shape, means + 3 * g, viewmats + 16 * camera, intrinsics + 4 * camera, s);
        const S* gm2 = grad_means2d + 2 * out;
        const S* gc = grad_conics + 3 * out;
        const S* gf = grad_features + 4 * out;
        for (int ch = 0; ch < 3; ++ch) g_rgb[ch] += gf[ch];
        const S tx = view.mc[0], ty = view.mc[1], tz = view.mc[2], tz2 = tz * tz, tz3 = tz2 * tz;
        S g_mc[3] = {gm2[0] * view.fx / tz, gm2[1] * view.fy / tz,
                     gf[3] - (gm2[0] * view.fx * tx + gm2[1] * view.fy * ty) / tz2};
        // conic (a, b, c) = (c11, -c01, c00) / det, det = c00 c11 - c01^2 (constant where it was clamped)
        const S c00 = view.cov[0], c01 = view.cov[1], c11 = view.cov[2], det = view.det;
        const S g_det = view.det_raw > S(1e-10) ? -(gc[0] * c11 - gc[1] * c01 + gc[2] * c00) / (det * det) : S(0);
        const S g_c00 = gc[2] / det + g_det * c11, g_c11 = gc[0] / det + g_det * c00;
        const S g_c01 = -gc[1] / det - S(2) * g_det * c01;  // c01 stands for both off-diagonal entries
        const S G[2][2] = {{g_c00, S(0.5) * g_c01}, {S(0.5) * g_c01, g_c11}};
        // cov2d = J Sigma_c J^T: dL/dSigma_c = J^T G J, dL/dJ = 2 G J Sigma_c
        S GJ[2][3], JS[2][3], g_J[2][3];
        for (int i = 0; i < 2; ++i)
          for (int k = 0; k < 3; ++k) {
            GJ[i][k] = G[i][0] * view.J[0][k] + G[i][1] * view.J[1][k];
            JS[i][k] = view.J[i][0] * view.sigma_c[0][k] + view.J[i][1] * view.sigma_c[1][k] +
                       view.J[i][2] * view.sigma_c[2][k];
          }
        for (int i = 0; i < 2; ++i)
          for (int k = 0; k < 3; ++k) g_J[i][k] = S(2) * (G[i][0] * JS[0][k] + G[i][1] * JS[1][k]);
        S g_sigma_c[3][3];
        for (int k = 0; k < 3; ++k)
          for (int l = 0; l < 3; ++l) g_sigma_c[k][l] = view.J[0][k] * GJ[0][l] + view.J[1][k] * GJ[1][l];
        // J's entries through z and the clamped x', y'
        g_mc[2] += -g_J[0][0] * view.fx / tz2 - g_J[1][1] * view.fy / tz2 + S(2) * g_J[0][2] * view.fx * view.txc / tz3 +
                   S(2) * g_J[1][2] * view.fy * view.tyc / tz3;
        const S g_txc = -g_J[0][2] * view.fx / tz2, g_tyc = -g_J[1][2] * view.fy / tz2;
        if (view.x_inside)
          g_mc[0] += g_txc;  // x' = z (x / z): d/dz cancels
        else
          g_mc[2] += g_txc * view.ux_clamped;
        if (view.y_inside)
          g_mc[1] += g_tyc;
        else
          g_mc[2] += g_tyc * view.uy_clamped;
        // m_c = W mu + t, Sigma_c = W Sigma W^T
        for (int j = 0; j < 3; ++j)
          g_mean[j] += view.W[0][j] * g_mc[0] + view.W[1][j] * g_mc[1] + view.W[2][j] * g_mc[2];
        S GW[3][3];  // g_sigma_c W
        for (int k = 0; k < 3; ++k)
          for (int j = 0; j < 3; ++j)
            GW[k][j] = g_sigma_c[k][0] * view.W[0][j] + g_sigma_c[k][1] * view.W[1][j] + g_sigma_c[k][2] * view.W[2][j];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j)
            g_sigma[i][j] += view.W[0][i] * GW[0][j] + view.W[1][i] * GW[1][j] + view.W[2][i] * GW[2][j];
      }
      for (int j = 0; j < 3; ++j) grad_means[3 * g + j] = g_mean[j];
      for (int ch = 0; ch < 3; ++ch) {  // clamp_min passes the gradient where the input is >= 0
        const S value = S(kShC0) * sh0[3 * g + ch] + S(0.5);
        grad_sh0[3 * g + ch] = value >= S(0) ? g_rgb[ch] * S(kShC0) : S(0);
      }
      // Sigma = M M^T (g_sigma symmetric): dL/dM = 2 g_sigma M; M = R diag(s)
      S g_R[3][3], g_scale[3] = {0, 0, 0};
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
          const S g_M = S(2) * (g_sigma[i][0] * shape.M[0][j] + g_sigma[i][1] * shape.M[1][j] +
                                g_sigma[i][2] * shape.M[2][j]);
          g_R[i][j] = g_M * scales[3 * g + j];
          g_scale[j] += g_M * shape.R[i][j];
        }
      for (int j = 0; j < 3; ++j) grad_scales[3 * g + j] = g_scale[j];
      const S w = shape.q[0], x = shape.q[1], y = shape.q[2], z = shape.q[3];
      const S(&G)[3][3] = g_R;
      S g_q[4];
      g_q[0] = 2 * (-z * G[0][1] + y * G[0][2] + z * G[1][0] - x * G[1][2] - y * G[2][0] + x * G[2][1]);
      g_q[1] = 2 * (y * G[0][1] + z * G[0][2] + y * G[1][0] - 2 * x * G[1][1] - w * G[1][2] + z * G[2][0] +
                    w * G[2][1] - 2 * x * G[2][2]);
      g_q[2] = 2 * (-2 * y * G[0][0] + x * G[0][1] + w * G[0][2] + x * G[1][0] + z * G[1][2] - w * G[2][0] +
                    z * G[2][1] - 2 * y * G[2][2]);
      g_q[3] = 2 * (-2 * z * G[0][0] - w * G[0][1] + x * G[0][2] + w * G[1][0] - 2 * z * G[1][1] + y * G[1][2] +
                    x * G[2][0] + y * G[2][1]);
      // q_hat = q / |q|: dq = (dq_hat - q_hat (q_hat . dq_hat)) / |q|
      const S along = w * g_q[0] + x * g_q[1] + y * g_q[2] + z * g_q[3];
      for (int i = 0; i < 4; ++i) grad_quats[4 * g + i] = (g_q[i] - shape.q[i] * along) / shape.norm;
    }
  });
}

template <typename S>
int32_t project_forward(const gslrm_abi::ProjectForwardArgs& a) {
  const Settings s{a.scenes, a.views, a.width, a.height, a.gaussians, a.eps2d, a.near_plane, a.far_plane};
  forward<S>(static_cast<const S*>(a.means), static_cast<const S*>(a.quats), static_cast<const S*>(a.scales),
             static_cast<const S*>(a.opacities), static_cast<const S*>(a.sh0), static_cast<const S*>(a.viewmats),
             static_cast<const S*>(a.intrinsics), s, a.threads, static_cast<S*>(a.means2d), static_cast<S*>(a.conics),
             static_cast<S*>(a.features), static_cast<S*>(a.depths), a.radii);
  return gslrm_abi::kOk;
}

template <typename S>
int32_t project_backward(const gslrm_abi::ProjectBackwardArgs& a) {
  const Settings s{a.scenes, a.views, a.width, a.height, a.gaussians, a.eps2d, a.near_plane, a.far_plane};
  backward<S>(static_cast<const S*>(a.means), static_cast<const S*>(a.quats), static_cast<const S*>(a.scales),
              static_cast<const S*>(a.sh0), static_cast<const S*>(a.viewmats), static_cast<const S*>(a.intrinsics),
              a.radii, s, a.threads, static_cast<const S*>(a.grad_means2d), static_cast<const S*>(a.grad_conics),
              static_cast<const S*>(a.grad_features), static_cast<S*>(a.grad_means), static_cast<S*>(a.grad_quats),
              static_cast<S*>(a.grad_scales), static_cast<S*>(a.grad_sh0));
  return gslrm_abi::kOk;
}

}  // namespace


GSLRM_EXPORT(gslrm_project_forward, ProjectForwardArgs, project_forward)
GSLRM_EXPORT(gslrm_project_backward, ProjectBackwardArgs, project_backward)
