// The recurrent layer ops (one layer, one direction, a whole sequence) registered as torch operators in C++: the
// schemas, the front functions that call them (rnn_ops.h), the autograd and the autocast policy, once for every
// device. A decoder loop calls a layer once per token, and the Python custom-op wrapper cost ~40 us per call each
// way, most of a one-step call at B=1 (see csrc/crf/crf_ops.cpp); from here eager calls go from the dispatcher to
// the kernel. The fake kernels stay in Python (pyseq/_ops/rnn.py).
#include "rnn_ops.h"

#include <torch/library.h>

#include <array>
#include <atomic>
#include <string>
#include <tuple>

#include "../common/autocast.h"
#include "../common/autograd_kernel.h"
#include "../common/ops.h"
#include "rnn.h"

namespace pyseq {

RnnLayerResults rnn_layer(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes, const at::Tensor& h0,
                          const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih,
                          const at::Tensor& b_hh, const at::Tensor& w_hr, bool reverse, bool save_workspace) {
  PYSEQ_CALL_OP(rnn_layer, mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace);
}

RnnLayerGradients rnn_layer_backward(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& w_hr,
                                     const at::Tensor& workspace, const at::Tensor& grad_y, const at::Tensor& grad_hn,
                                     const at::Tensor& grad_cn, bool reverse, bool has_bias, bool need_dx,
                                     bool need_dh0) {
  PYSEQ_CALL_OP(rnn_layer_backward, mode, x, batch_sizes, w_ih, w_hh, w_hr, workspace, grad_y, grad_hn, grad_cn,
                reverse, has_bias, need_dx, need_dh0);
}

namespace {

// Whether an optional argument (bias, projection: empty when absent) is given.
bool is_present(const at::Tensor& t) { return t.sym_numel().sym_gt(0).guard_bool(__FILE__, __LINE__); }

// The layer as differentiable ATen ops, step by step, for backward with create_graph
// (csrc/common/double_backward.h). Arguments as the op's; returns (y, h_n, c_n), c_n undefined but for the LSTM.
variable_list layer_composite(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes, const at::Tensor& h0,
                              const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                              const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& w_hr, bool reverse) {
  const CellMode cell = static_cast<CellMode>(mode);
  const bool has_bias = is_present(b_ih), has_proj = is_present(w_hr);
  const at::Tensor rows = x.dim() == 3 ? x.reshape({-1, x.size(2)}) : x;  // [N, I], packed
  const at::Tensor projected = has_bias ? at::linear(rows, w_ih, b_ih) : at::linear(rows, w_ih);  // [N, G*H]
  // (element by element: under torch.func the sizes may come wrapped, without storage to read)
  const int64_t T = batch_sizes.size(0), B = h0.size(0);
  std::vector<int64_t> first(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) first[t + 1] = first[t] + batch_sizes[t].item<int64_t>();
  at::Tensor h = h0, c = c0;
  std::vector<at::Tensor> y(T);
  for (int64_t i = 0; i < T; ++i) {
    const int64_t t = reverse ? T - 1 - i : i, active = first[t + 1] - first[t];
    const at::Tensor h_prev = h.narrow(0, 0, active);
    const at::Tensor gx = projected.narrow(0, first[t], active);
    const at::Tensor gh = has_bias ? at::linear(h_prev, w_hh, b_hh) : at::linear(h_prev, w_hh);
    at::Tensor h_new;
    if (cell == CellMode::Lstm) {
      const std::vector<at::Tensor> gate = (gx + gh).chunk(4, 1);  // i, f, g, o
      const at::Tensor c_new = gate[1].sigmoid() * c.narrow(0, 0, active) + gate[0].sigmoid() * gate[2].tanh();
      h_new = gate[3].sigmoid() * c_new.tanh();
      if (has_proj) h_new = at::linear(h_new, w_hr);
      c = at::cat({c_new, c.narrow(0, active, B - active)});
    } else if (cell == CellMode::Gru) {
      const std::vector<at::Tensor> ix = gx.chunk(3, 1), hx = gh.chunk(3, 1);  // r, z, n
      const at::Tensor r = (ix[0] + hx[0]).sigmoid(), z = (ix[1] + hx[1]).sigmoid();
      const at::Tensor n = (ix[2] + r * hx[2]).tanh();
      h_new = (1 - z) * n + z * h_prev;
    } else {
      h_new = cell == CellMode::RnnTanh ? (gx + gh).tanh() : (gx + gh).relu();
    }
    h = at::cat({h_new, h.narrow(0, active, B - active)});
    y[t] = h_new;
  }
  at::Tensor out = at::cat(y);
  if (x.dim() == 3) out = out.view({x.size(0), x.size(1), -1});
  return {out, h, cell == CellMode::Lstm ? c : at::Tensor()};
}

// The layer's derivative (csrc/common/autograd_kernel.h): with respect to x, h0, c0 and the weights.
struct LayerDerivative {
  static constexpr auto forward = &rnn_layer;
  // x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr
  static constexpr std::array<size_t, 8> kDifferentiable{1, 3, 4, 5, 6, 7, 8, 9};

  static void save(AutogradContext* ctx, const RnnLayerResults& results, int64_t mode, const at::Tensor& x,
                   const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& w_hr,
                   bool reverse, bool save_workspace) {
    const at::Tensor& workspace = std::get<3>(results);
    ctx->save_for_backward({x, batch_sizes, w_ih, w_hh, w_hr, workspace, h0, c0, b_ih, b_hh});
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["reverse"] = reverse;
    // Sizes through their symbolic forms: under torch.compile the tensors here have symbolic shapes.
    ctx->saved_data["has_bias"] = is_present(b_ih);
    ctx->saved_data["has_workspace"] = save_workspace;
    ctx->saved_data["batch"] = h0.sym_size(0);
    // (Results a loss does not use arrive in backward undefined: the workspace alone is N x 2H to 6H; backward fills
    // in the small ones it needs.)
    ctx->mark_non_differentiable({workspace});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    check_saved_workspace(ctx);
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor &x = s[0], &w_hh = s[3], &w_hr = s[4];
    const int64_t mode = ctx->saved_data["mode"].toInt();
    const c10::SymInt batch = ctx->saved_data["batch"].toSymInt(), Hr = w_hh.sym_size(1);
    const bool lstm = static_cast<CellMode>(mode) == CellMode::Lstm;
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // y has the layout of x ([N, Hr] or [T, B, Hr]).
    std::vector<c10::SymInt> y_shape(x.sym_sizes().begin(), x.sym_sizes().end());
    y_shape.back() = Hr;
    at::Tensor grad_y = grads[0].defined() ? grads[0] : at::zeros_symint(y_shape, x.options());
    at::Tensor grad_hn = grads[1].defined() ? grads[1] : at::zeros_symint({batch, Hr}, x.options());
    at::Tensor grad_cn = !lstm ? at::empty({0}, x.options())
                         : grads[2].defined() ? grads[2]
                                              : at::zeros_symint({batch, w_hh.sym_size(0) / 4}, x.options());
    // (needs_input_grad counts the tensor arguments only: x, batch_sizes, h0, ...)
    const bool need_dx = ctx->needs_input_grad(0), need_dh0 = ctx->needs_input_grad(2);
    auto [dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr] =
        rnn_layer_backward(mode, x, s[1], s[2], w_hh, w_hr, s[5], grad_y, grad_hn, grad_cn,
                           ctx->saved_data["reverse"].toBool(), has_bias, need_dx, need_dh0);
    const at::Tensor none;
    return {need_dx ? dx : none,
            need_dh0 ? dh0 : none,
            lstm ? dc0 : none,
            dw_ih,
            dw_hh,
            has_bias ? db_ih : none,
            has_bias ? db_hh : none,
            is_present(w_hr) ? dw_hr : none};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    check_saved_workspace(ctx);
    const variable_list s = ctx->get_saved_variables();
    const int64_t mode = ctx->saved_data["mode"].toInt();
    const bool reverse = ctx->saved_data["reverse"].toBool();
    // Tensor inputs in the forward's order: x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr.
    return differentiable_vjp(
        {grads[0], grads[1], grads[2]}, {s[0], s[6], s[7], s[2], s[3], s[8], s[9], s[4]}, [&](const auto& in) {
          return layer_composite(mode, in[0], s[1], in[1], in[2], in[3], in[4], in[5], in[6], in[7], reverse);
        });
  }

  static RnnLayerResults composite(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes,
                                   const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                                   const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                                   const at::Tensor& w_hr, bool reverse, bool save_workspace) {
    const variable_list out = layer_composite(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse);
    const at::Tensor none = at::empty({0}, out[0].options());
    return {out[0], out[1], out[2].defined() ? out[2] : none, none};
  }

  static void check_saved_workspace(AutogradContext* ctx) {
    TORCH_CHECK(ctx->saved_data["has_workspace"].toBool(),
                "pyseq::rnn_layer ran with save_workspace=False, so it cannot be differentiated; run it with "
                "save_workspace=True when gradients are needed");
  }
};

std::atomic<bool> g_cuda_persistent{false};

}  // namespace

void set_cuda_recurrent_kernel(const std::string& name) {
  TORCH_CHECK_VALUE(name == "steps" || name == "persistent",
                    "CUDA recurrent kernel must be 'steps' or 'persistent', got '", name, "'");
  g_cuda_persistent = name == "persistent";
}

std::string cuda_recurrent_kernel_name() { return g_cuda_persistent ? "persistent" : "steps"; }

bool cuda_persistent_forward_requested() { return g_cuda_persistent; }

}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def(
      "rnn_layer(int mode, Tensor x, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor b_ih, Tensor b_hh, Tensor w_hr, bool reverse, bool save_workspace) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "rnn_layer_backward(int mode, Tensor x, Tensor batch_sizes, Tensor w_ih, Tensor w_hh, Tensor w_hr, "
      "Tensor workspace, Tensor grad_y, Tensor grad_hn, Tensor grad_cn, bool reverse, bool has_bias, bool need_dx, "
      "bool need_dh0) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) { m.impl("rnn_layer", PYSEQ_AUTOGRAD_KERNEL(pyseq::LayerDerivative)); }

// Under autocast the layer runs in the autocast dtype, as torch.nn's LSTM, GRU and RNN do (csrc/common/autocast.h);
// the casts are recorded by autograd, so the float32 parameters get float32 gradients. (Which results torch's modules
// hand back in the input's dtype instead is the Python layer's business: pyseq/functional.py.)
namespace {
const pyseq::AutocastOps kAutocastOps{{"rnn_layer"}, {}, {"rnn_layer_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
