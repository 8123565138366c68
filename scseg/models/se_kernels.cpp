// Fused CPU kernels for the SE blocks (scseg/models/se_fused.py builds and calls them; see its docstring for why).
//
// Every kernel sees a feature map as a 3D contiguous tensor in one of two layouts:
//   rows   (channels_last = true):  (N, P, C), each pixel's channels contiguous (NHWC / NDHWC memory);
//   planes (channels_last = false): (N, C, P), each channel's pixels contiguous (NCHW / NCDHW memory).
// P is the number of pixels (voxels). Work is split into tasks of (sample, block of pixels); per-channel sums are
// written per task and added up afterwards, so the result does not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace {

// Pixels per task: a block of `block` pixels x C channels of two tensors stays in L2 cache.
int64_t pixel_block(int64_t channels) { return std::max<int64_t>(64, (int64_t{1} << 15) / std::max<int64_t>(channels, 1)); }

struct Shape {
  int64_t n, p, c, block, blocks;
};

Shape shape_of(const at::Tensor& x, bool channels_last) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "scseg SE kernels take a contiguous (N, P, C) or (N, C, P) tensor");
  Shape s;
  s.n = x.size(0);
  s.p = channels_last ? x.size(1) : x.size(2);
  s.c = channels_last ? x.size(2) : x.size(1);
  s.block = pixel_block(s.c);
  s.blocks = std::max<int64_t>(1, (s.p + s.block - 1) / s.block);
  return s;
}

// sum_c a[c] * b[c] with 16 independent partial sums: with one accumulator every add waits for the previous one
// (the squeeze's projection was latency-bound, 2-4x slower than reading x at C = 32-64). The partial sums are added
// in a fixed order, so the result does not depend on the machine's vector width.
template <typename T>
inline T dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  constexpr int64_t lanes = 16;
  T partial[lanes] = {};
  int64_t c = 0;
  for (; c + lanes <= n; c += lanes)
    for (int64_t j = 0; j < lanes; ++j) partial[j] += a[c + j] * b[c + j];
  T total = 0;
  for (; c < n; ++c) total += a[c] * b[c];
  for (int64_t j = 0; j < lanes; ++j) total += partial[j];
  return total;
}

// Runs f(task, n, p0, p1) for every (sample n, pixel block [p0, p1)) on torch's intra-op threads.
template <typename F>
void for_each_block(const Shape& s, const F& f) {
  at::parallel_for(0, s.n * s.blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / s.blocks, k = task % s.blocks;
      const int64_t p0 = k * s.block;
      f(task, n, p0, std::min(s.p, p0 + s.block));
    }
  });
}

// Spatial sum per channel (N, C) and the projection sum_c w_c x_c + b per pixel (N, P), in one pass over x.
std::vector<at::Tensor> squeeze(const at::Tensor& x, const at::Tensor& weight, double bias, bool channels_last,
                                bool want_sum, bool want_projection) {
  const Shape s = shape_of(x, channels_last);
  auto partial = at::zeros({s.n, s.blocks, want_sum ? s.c : 0}, x.options());
  auto projection = at::empty({s.n, want_projection ? s.p : 0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "scseg_squeeze", [&] {
    const scalar_t* X = x.data_ptr<scalar_t>();
    const scalar_t* W = want_projection ? weight.data_ptr<scalar_t>() : nullptr;
    scalar_t* S = partial.data_ptr<scalar_t>();
    scalar_t* Q = projection.data_ptr<scalar_t>();
    const scalar_t b = static_cast<scalar_t>(bias);
    for_each_block(s, [&](int64_t task, int64_t n, int64_t p0, int64_t p1) {
        scalar_t* sums = want_sum ? S + task * s.c : nullptr;
        scalar_t* q = want_projection ? Q + n * s.p : nullptr;
        if (channels_last) {
          for (int64_t p = p0; p < p1; ++p) {
            const scalar_t* row = X + (n * s.p + p) * s.c;
            if (want_sum)
              for (int64_t c = 0; c < s.c; ++c) sums[c] += row[c];
            if (want_projection) q[p] = dot<scalar_t>(W, row, s.c) + b;
          }
        } else {
          if (want_projection)
            for (int64_t p = p0; p < p1; ++p) q[p] = b;
          for (int64_t c = 0; c < s.c; ++c) {
            const scalar_t* plane = X + (n * s.c + c) * s.p;
            scalar_t acc = 0;
_Pragma("omp simd reduction(+ : acc)")
            for (int64_t p = p0; p < p1; ++p) acc += plane[p];
            if (want_sum) sums[c] = acc;
            if (want_projection) {
              const scalar_t w = W[c];
              for (int64_t p = p0; p < p1; ++p) q[p] += w * plane[p];
            }
          }
        }
    });
  });
  return {partial.sum(1), projection};
}

// out = x * (c + s): c (N, C) per channel, s (N, P) per pixel; an empty gate counts as 0.
at::Tensor recalibrate(const at::Tensor& x, const at::Tensor& c_gate, const at::Tensor& s_gate, bool channels_last) {
  const Shape s = shape_of(x, channels_last);
  const bool has_c = c_gate.numel() > 0, has_s = s_gate.numel() > 0;
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "scseg_recalibrate", [&] {
    const scalar_t* X = x.data_ptr<scalar_t>();
    const scalar_t* CG = has_c ? c_gate.data_ptr<scalar_t>() : nullptr;
    const scalar_t* SG = has_s ? s_gate.data_ptr<scalar_t>() : nullptr;
    scalar_t* O = out.data_ptr<scalar_t>();
    const std::vector<scalar_t> zeros(s.c, scalar_t(0));
    for_each_block(s, [&](int64_t task, int64_t n, int64_t p0, int64_t p1) {
        const scalar_t* cg = has_c ? CG + n * s.c : zeros.data();
        if (channels_last) {
          for (int64_t p = p0; p < p1; ++p) {
            const scalar_t sp = has_s ? SG[n * s.p + p] : scalar_t(0);
            const scalar_t* row = X + (n * s.p + p) * s.c;
            scalar_t* o = O + (n * s.p + p) * s.c;
            for (int64_t c = 0; c < s.c; ++c) o[c] = row[c] * (cg[c] + sp);
          }
        } else {
          for (int64_t c = 0; c < s.c; ++c) {
            const scalar_t* plane = X + (n * s.c + c) * s.p;
            scalar_t* o = O + (n * s.c + c) * s.p;
            const scalar_t cc = cg[c];
            if (has_s) {
              const scalar_t* sp = SG + n * s.p;
              for (int64_t p = p0; p < p1; ++p) o[p] = plane[p] * (cc + sp[p]);
            } else {
              for (int64_t p = p0; p < p1; ++p) o[p] = plane[p] * cc;
            }
          }
        }
    });
  });
  return out;
}

// Backward reductions in one pass over grad and x:
//   grad_c[n, c]  = sum_p grad * x                        (when the block has a channel gate)
//   grad_q[n, p]  = (sum_c grad * x) * s * (1 - s)         (when it has a spatial gate s = sigmoid(q))
//   grad_w[c]     = sum_{n, p} grad_q * x                  (the projection's weight gradient)
std::vector<at::Tensor> reduce_grads(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& s_gate,
                                     bool channels_last, bool has_c) {
  const Shape s = shape_of(x, channels_last);
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.is_contiguous(), "grad must match x");
  const bool has_s = s_gate.numel() > 0;
  auto partial_c = at::zeros({s.n, s.blocks, has_c ? s.c : 0}, x.options());
  auto partial_w = at::zeros({s.n, s.blocks, has_s ? s.c : 0}, x.options());
  auto grad_q = at::empty({s.n, has_s ? s.p : 0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "scseg_reduce_grads", [&] {
    const scalar_t* G = grad.data_ptr<scalar_t>();
    const scalar_t* X = x.data_ptr<scalar_t>();
    const scalar_t* SG = has_s ? s_gate.data_ptr<scalar_t>() : nullptr;
    scalar_t* PC = partial_c.data_ptr<scalar_t>();
    scalar_t* PW = partial_w.data_ptr<scalar_t>();
    scalar_t* GQ = grad_q.data_ptr<scalar_t>();
    for_each_block(s, [&](int64_t task, int64_t n, int64_t p0, int64_t p1) {
      std::vector<scalar_t> pixel_sums;
        scalar_t* pc = has_c ? PC + task * s.c : nullptr;
        scalar_t* pw = has_s ? PW + task * s.c : nullptr;
        if (channels_last) {
          for (int64_t p = p0; p < p1; ++p) {
            const scalar_t* g = G + (n * s.p + p) * s.c;
            const scalar_t* row = X + (n * s.p + p) * s.c;
            scalar_t gx = 0;  // one accumulator is enough here: the pass waits on reading two tensors, not on adds
            if (has_c) {  // two loops, so that neither holds a branch the vectoriser has to keep
_Pragma("omp simd reduction(+ : gx)")
              for (int64_t c = 0; c < s.c; ++c) {
                const scalar_t product = g[c] * row[c];
                gx += product;
                pc[c] += product;
              }
            } else {
_Pragma("omp simd reduction(+ : gx)")
              for (int64_t c = 0; c < s.c; ++c) gx += g[c] * row[c];
            }
            if (has_s) {
              const scalar_t sp = SG[n * s.p + p];
              const scalar_t dq = gx * sp * (scalar_t(1) - sp);
              GQ[n * s.p + p] = dq;
              for (int64_t c = 0; c < s.c; ++c) pw[c] += dq * row[c];
            }
          }
        } else {
          pixel_sums.assign(p1 - p0, scalar_t(0));
          for (int64_t c = 0; c < s.c; ++c) {
            const scalar_t* g = G + (n * s.c + c) * s.p;
            const scalar_t* plane = X + (n * s.c + c) * s.p;
            scalar_t acc = 0;
_Pragma("omp simd reduction(+ : acc)")
            for (int64_t p = p0; p < p1; ++p) {
              const scalar_t gx = g[p] * plane[p];
              acc += gx;
              pixel_sums[p - p0] += gx;
            }
            if (has_c) pc[c] = acc;
          }
          if (has_s) {
            for (int64_t p = p0; p < p1; ++p) {
              const scalar_t sp = SG[n * s.p + p];
              GQ[n * s.p + p] = pixel_sums[p - p0] * sp * (scalar_t(1) - sp);
            }
            for (int64_t c = 0; c < s.c; ++c) {  // the block is still in cache
              const scalar_t* plane = X + (n * s.c + c) * s.p;
              scalar_t acc = 0;
_Pragma("omp simd reduction(+ : acc)")
              for (int64_t p = p0; p < p1; ++p) acc += GQ[n * s.p + p] * plane[p];
              pw[c] = acc;
            }
          }
        }
    });
  });
  return {partial_c.sum(1), grad_q, partial_w.sum(at::IntArrayRef{0, 1})};
}

// grad_x = grad * (c + s) + a_c + w_c * grad_q_p: the recombination's, the spatial mean's (a = grad_mean / P) and
// the projection's share of the input gradient, written in one pass. Empty tensors count as 0.
at::Tensor input_grad(const at::Tensor& grad, const at::Tensor& c_gate, const at::Tensor& s_gate,
                      const at::Tensor& mean_share, const at::Tensor& weight, const at::Tensor& grad_q,
                      bool channels_last) {
  const Shape s = shape_of(grad, channels_last);
  const bool has_c = c_gate.numel() > 0, has_s = s_gate.numel() > 0;
  auto out = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "scseg_input_grad", [&] {
    const scalar_t* G = grad.data_ptr<scalar_t>();
    const scalar_t* CG = has_c ? c_gate.data_ptr<scalar_t>() : nullptr;
    const scalar_t* A = has_c ? mean_share.data_ptr<scalar_t>() : nullptr;
    const scalar_t* SG = has_s ? s_gate.data_ptr<scalar_t>() : nullptr;
    const scalar_t* W = has_s ? weight.data_ptr<scalar_t>() : nullptr;
    const scalar_t* GQ = has_s ? grad_q.data_ptr<scalar_t>() : nullptr;
    scalar_t* O = out.data_ptr<scalar_t>();
    const std::vector<scalar_t> zeros(s.c, scalar_t(0));
    for_each_block(s, [&](int64_t task, int64_t n, int64_t p0, int64_t p1) {
        const scalar_t* cg = has_c ? CG + n * s.c : zeros.data();
        const scalar_t* a = has_c ? A + n * s.c : zeros.data();
        const scalar_t* w = has_s ? W : zeros.data();
        if (channels_last) {
          for (int64_t p = p0; p < p1; ++p) {
            const scalar_t sp = has_s ? SG[n * s.p + p] : scalar_t(0);
            const scalar_t dq = has_s ? GQ[n * s.p + p] : scalar_t(0);
            const scalar_t* g = G + (n * s.p + p) * s.c;
            scalar_t* o = O + (n * s.p + p) * s.c;
            for (int64_t c = 0; c < s.c; ++c) o[c] = g[c] * (cg[c] + sp) + a[c] + w[c] * dq;
          }
        } else {
          for (int64_t c = 0; c < s.c; ++c) {
            const scalar_t* g = G + (n * s.c + c) * s.p;
            scalar_t* o = O + (n * s.c + c) * s.p;
            const scalar_t cc = cg[c], ac = a[c], wc = w[c];
            if (has_s) {
              const scalar_t* sp = SG + n * s.p;
              const scalar_t* dq = GQ + n * s.p;
              for (int64_t p = p0; p < p1; ++p) o[p] = g[p] * (cc + sp[p]) + ac + wc * dq[p];
            } else {
              for (int64_t p = p0; p < p1; ++p) o[p] = g[p] * cc + ac;
            }
          }
        }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(scseg_se, m) {
  m.def("squeeze(Tensor x, Tensor weight, float bias, bool channels_last, bool want_sum, bool want_projection) -> Tensor[]");
  m.def("recalibrate(Tensor x, Tensor c_gate, Tensor s_gate, bool channels_last) -> Tensor");
  m.def("reduce_grads(Tensor grad, Tensor x, Tensor s_gate, bool channels_last, bool has_c) -> Tensor[]");
  m.def("input_grad(Tensor grad, Tensor c_gate, Tensor s_gate, Tensor mean_share, Tensor weight, Tensor grad_q, bool channels_last) -> Tensor");
}

TORCH_LIBRARY_IMPL(scseg_se, CPU, m) {
  m.impl("squeeze", &squeeze);
  m.impl("recalibrate", &recalibrate);
  m.impl("reduce_grads", &reduce_grads);
  m.impl("input_grad", &input_grad);
}
