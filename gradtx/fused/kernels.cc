// Single-pass CPU kernels for gradtx.fused_update: update plus apply_updates.
//
// XLA:CPU compiles a jax.numpy Adam step to three loops over memory (first
// moment, second moment, params: 40 bytes per float32 parameter). These
// kernels read each parameter, gradient and moment once and write params and
// moments once, in place (28 bytes for Adam). Up to 32 leaves of a tree go to one
// call (gradtx/buffers.py: LEAVES_PER_RUN), not one launch per leaf.
//
// Each kernel runs one block's per-element rule (a gradtx.recipe.Rule with a
// kernel) and the steps every kernel shares around it (Around below). Its
// arithmetic is written in the order of gradtx's jax.numpy blocks, with every
// scalar (1 - b1, the bias corrections, the signed learning rate, ...) computed
// in Python/JAX and passed in `hyper`, so the results agree with the unfused
// path to float32 rounding (tested to rtol 1e-6).
//
// Operands: hyper (f32[k]), then for each leaf its arrays in a fixed order
// (params, grads, then the rule's moments). Results: for each leaf params then
// moments, aliased to the inputs. The positions of the scalars in hyper, of the
// option bits in `flags` and of the moments come from gradtx_layout.h, which
// gradtx/fused/build.py generates from the rules (gradtx/fused/layout.py) when it
// builds this file on first use.
//
// A kernel for a new rule: declare the rule with kernel="gradtx_<name>" beside
// its block, write its loop here, name it in a one-line struct, and bind the
// symbol to Kernel<its layout, that struct> at the end.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "gradtx_layout.h"  // generated from gradtx/fused/layout.py at build time
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMinPerThread = 1 << 16;

struct Leaf {
  std::vector<float*> out;      // params, then moments (updated in place)
  const float* grad = nullptr;  // read only
  int64_t size = 0;
};

// Calls fn(leaf, lo, hi) over every element of every leaf, split into
// contiguous ranges of the concatenated leaves. The ranges run on XLA's own
// intra-op thread pool (its workers would otherwise compete with threads of
// ours for the cores) and on the calling thread; at most `max_threads` ranges
// (0: as many as the pool has threads), each of at least kMinPerThread
// elements.
//
// Ranges are claimed from a shared counter, by the caller and by the pool
// tasks alike, and the caller waits only for ranges already claimed. XLA may
// run several of these kernels at once, each on a pool worker: a task queued
// behind a busy worker is never waited for (the caller runs its range
// itself, and the task, when it starts, finds nothing left), so kernels
// cannot deadlock the pool waiting for each other.
template <typename Fn>
void ForEachRange(const std::vector<Leaf>& leaves, ffi::ThreadPool& pool, int64_t max_threads,
                  Fn fn) {
  int64_t total = 0;
  for (const Leaf& leaf : leaves) total += leaf.size;
  const int64_t available = max_threads > 0 ? max_threads : pool.num_threads();
  const int64_t threads = std::max<int64_t>(1, std::min(available, total / kMinPerThread));
  const int64_t chunk = (total + threads - 1) / threads;
  auto work = [&](int64_t t) {
    const int64_t begin = t * chunk, end = std::min(total, begin + chunk);
    int64_t start = 0;
    for (const Leaf& leaf : leaves) {
      const int64_t lo = std::max(begin, start), hi = std::min(end, start + leaf.size);
      if (lo < hi) fn(leaf, lo - start, hi - start);
      start += leaf.size;
    }
  };
  if (threads == 1) {
    work(0);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::mutex mutex;
    std::condition_variable all_done;
    int64_t done = 0;
    // Refers to the caller's frame: called only after a successful claim,
    // which happens before the caller can return.
    std::function<void(int64_t)> work;
  };
  auto shared = std::make_shared<Shared>();
  shared->work = work;
  auto claim_and_run = [shared, threads] {
    for (int64_t t; (t = shared->next.fetch_add(1)) < threads;) {
      shared->work(t);
      std::lock_guard<std::mutex> lock(shared->mutex);
      if (++shared->done == threads) shared->all_done.notify_one();
    }
  };
  for (int64_t t = 1; t < threads; ++t) pool.Schedule([claim_and_run] { claim_and_run(); });
  claim_and_run();
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->all_done.wait(lock, [&] { return shared->done == threads; });
}

// Reads `per_leaf` operands per leaf (params, grads, moments...) and the
// matching `per_leaf - 1` results (params, moments...).
ffi::ErrorOr<std::vector<Leaf>> Gather(ffi::RemainingArgs args, ffi::RemainingRets rets,
                                       size_t per_leaf) {
  if (args.size() % per_leaf != 0 || rets.size() != args.size() / per_leaf * (per_leaf - 1)) {
    return ffi::Unexpected(ffi::Error::InvalidArgument("gradtx fused: wrong operand count"));
  }
  std::vector<Leaf> leaves(args.size() / per_leaf);
  for (size_t i = 0; i < leaves.size(); ++i) {
    Leaf& leaf = leaves[i];
    auto grad = args.get<ffi::Buffer<ffi::F32>>(i * per_leaf + 1);
    if (!grad.has_value()) return ffi::Unexpected(grad.error());
    leaf.grad = grad->typed_data();
    leaf.size = static_cast<int64_t>(grad->element_count());
    for (size_t j = 0; j + 1 < per_leaf; ++j) {
      auto out = rets.get<ffi::Buffer<ffi::F32>>(i * (per_leaf - 1) + j);
      if (!out.has_value()) return ffi::Unexpected(out.error());
      if (static_cast<int64_t>((*out)->element_count()) != leaf.size) {
        return ffi::Unexpected(ffi::Error::InvalidArgument("gradtx fused: shape mismatch"));
      }
      leaf.out.push_back((*out)->typed_data());
    }
  }
  return leaves;
}

// The option bits of one call as compile-time constants: Options<...>::on[bit].
template <bool... kBits>
struct Options {
  static constexpr bool on[sizeof...(kBits) + 1] = {kBits..., false};
};

// Calls fn(Options<bit 0 of flags, bit 1, ...>{}), kLeft bits still to read.
template <int kLeft, bool... kBits, class Fn>
void WithOptions(int64_t flags, const Fn& fn) {
  if constexpr (kLeft == 0) {
    fn(Options<kBits...>{});
  } else if ((flags >> sizeof...(kBits)) & 1) {
    WithOptions<kLeft - 1, kBits..., true>(flags, fn);
  } else {
    WithOptions<kLeft - 1, kBits..., false>(flags, fn);
  }
}

// What every kernel does around its rule, in the recipe's order: the gradient is
// scaled (clip_by_global_norm) and coupled weight decay added before the
// rule; decoupled weight decay is added to its direction and the rate applied after.
template <class O>
struct Around {
  using S = gradtx_layout::shared::scalar;
  using B = gradtx_layout::shared::option;
  float grad_scale, coupled, decoupled, rate;
  explicit Around(const float* h)
      : grad_scale(h[S::kGradScale]), coupled(h[S::kCoupledDecay]),
        decoupled(h[S::kDecoupledDecay]), rate(h[S::kRate]) {}
  float In(float g, float p) const {
    // Scaling only with the option: a multiplication by 1 would change how the
    // compiler contracts the rule's a * b + c, and so its rounding.
    const float gi = O::on[B::kGradScale] ? grad_scale * g : g;
    return O::on[B::kCoupledDecay] ? gi + coupled * p : gi;
  }
  float Out(float u, float p) const {
    return p + rate * (O::on[B::kDecoupledDecay] ? u + decoupled * p : u);
  }
};

// The loops take every array as a restrict pointer and read their scalars into
// locals first, with the options as template parameters: no loads of captured
// state and no branches inside, so the compiler vectorises them.

template <class O>
void SgdLoop(float* __restrict__ p, const float* __restrict__ g, int64_t n, const float* h) {
  const Around<O> around(h);
  for (int64_t i = 0; i < n; ++i) p[i] = around.Out(around.In(g[i], p[i]), p[i]);
}

template <class O>
void MomentumLoop(float* __restrict__ p, float* __restrict__ t, const float* __restrict__ g,
                  int64_t n, const float* h) {
  using S = gradtx_layout::trace::scalar;
  using B = gradtx_layout::trace::option;
  constexpr bool kNesterov = O::on[B::kNesterov], kUnitGain = O::on[B::kUnitGain];
  const Around<O> around(h);
  const float mu = h[S::kDecay], omu = h[S::kOneMinusDecay];
  for (int64_t i = 0; i < n; ++i) {
    const float gi = around.In(g[i], p[i]);
    const float ti = kUnitGain ? omu * gi + mu * t[i] : gi + mu * t[i];
    t[i] = ti;
    const float u = kNesterov ? (kUnitGain ? omu * gi + mu * ti : gi + mu * ti) : ti;
    p[i] = around.Out(u, p[i]);
  }
}

template <class O>
void RmspropLoop(float* __restrict__ p, float* __restrict__ nu, const float* __restrict__ g,
                 int64_t n, const float* h) {
  using S = gradtx_layout::scale_by_rms::scalar;
  constexpr bool kInSqrt = O::on[gradtx_layout::scale_by_rms::option::kEpsInSqrt];
  const Around<O> around(h);
  const float rho = h[S::kDecay], orho = h[S::kOneMinusDecay], eps = h[S::kEps];
  for (int64_t i = 0; i < n; ++i) {
    const float gi = around.In(g[i], p[i]);
    const float ni = orho * (gi * gi) + rho * nu[i];
    nu[i] = ni;
    const float scale = kInSqrt ? 1.0f / std::sqrt(ni + eps) : 1.0f / (std::sqrt(ni) + eps);
    p[i] = around.Out(scale * gi, p[i]);
  }
}

template <class O>
void AdamLoop(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
              const float* __restrict__ g, int64_t n, const float* h) {
  using S = gradtx_layout::scale_by_adam::scalar;
  const Around<O> around(h);
  const float b1 = h[S::kB1], ob1 = h[S::kOneMinusB1], b2 = h[S::kB2], ob2 = h[S::kOneMinusB2];
  // XLA turns a division by a bias correction into a multiplication by its inverse.
  const float r1 = h[S::kInvBiasCorrection1], r2 = h[S::kInvBiasCorrection2];
  const float eps = h[S::kEps], eps_root = h[S::kEpsRoot];
  for (int64_t i = 0; i < n; ++i) {
    const float gi = around.In(g[i], p[i]);
    const float mi = ob1 * gi + b1 * m[i];
    const float vi = ob2 * (gi * gi) + b2 * v[i];
    m[i] = mi;
    v[i] = vi;
    p[i] = around.Out((mi * r1) / (std::sqrt(vi * r2 + eps_root) + eps), p[i]);
  }
}

template <class O>
void AdagradLoop(float* __restrict__ p, float* __restrict__ sums, const float* __restrict__ g,
                 int64_t n, const float* h) {
  constexpr bool kInSqrt = O::on[gradtx_layout::scale_by_rss::option::kEpsInSqrt];
  const Around<O> around(h);
  const float eps = h[gradtx_layout::scale_by_rss::scalar::kEps];
  for (int64_t i = 0; i < n; ++i) {
    const float gi = around.In(g[i], p[i]);
    const float si = gi * gi + sums[i];
    sums[i] = si;
    const float factor = kInSqrt ? 1.0f / std::sqrt(si + eps) : 1.0f / (std::sqrt(si) + eps);
    p[i] = around.Out((si > 0.0f ? factor : 0.0f) * gi, p[i]);
  }
}

// jnp.sign: -1 or 1, and zeros and NaNs as they are.
inline float Sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); }

template <class O>
void LionLoop(float* __restrict__ p, float* __restrict__ m, const float* __restrict__ g,
              int64_t n, const float* h) {
  using S = gradtx_layout::scale_by_lion::scalar;
  const Around<O> around(h);
  const float b1 = h[S::kB1], ob1 = h[S::kOneMinusB1], b2 = h[S::kB2], ob2 = h[S::kOneMinusB2];
  for (int64_t i = 0; i < n; ++i) {
    const float gi = around.In(g[i], p[i]);
    const float u = Sign(ob1 * gi + b1 * m[i]);
    m[i] = ob2 * gi + b2 * m[i];
    p[i] = around.Out(u, p[i]);
  }
}

// The loops of the kernels, by rule: each takes the params, the rule's moments in the
// rule's order, the gradients, the length and the scalars.
struct Sgd { template <class O, class... A> static void Loop(A... a) { SgdLoop<O>(a...); } };
struct Momentum { template <class O, class... A> static void Loop(A... a) { MomentumLoop<O>(a...); } };
struct Rmsprop { template <class O, class... A> static void Loop(A... a) { RmspropLoop<O>(a...); } };
struct Adam { template <class O, class... A> static void Loop(A... a) { AdamLoop<O>(a...); } };
struct Adagrad { template <class O, class... A> static void Loop(A... a) { AdagradLoop<O>(a...); } };
struct Lion { template <class O, class... A> static void Loop(A... a) { LionLoop<O>(a...); } };

// One range of one leaf through Rule::Loop: out[0] is the params, out[1 + k] moment k.
template <class Rule, class O, size_t... k>
void LoopOver(const Leaf& leaf, int64_t lo, int64_t hi, const float* h, std::index_sequence<k...>) {
  Rule::template Loop<O>(leaf.out[0] + lo, (leaf.out[1 + k] + lo)..., leaf.grad + lo, hi - lo, h);
}

// The handler of one kernel: checks the call against its layout (gradtx_layout.h), then
// runs Rule::Loop, its options as template parameters, over every range of every leaf.
template <class Layout, class Rule>
ffi::Error Kernel(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> hyper, ffi::RemainingArgs args,
                  ffi::RemainingRets rets, int64_t threads, int64_t flags) {
  if (static_cast<int64_t>(hyper.element_count()) != Layout::scalar::kCount) {
    return ffi::Error::InvalidArgument("gradtx fused: wrong number of scalars");
  }
  if (flags < 0 || flags >> Layout::option::kCount) {
    return ffi::Error::InvalidArgument("gradtx fused: unknown option bits");
  }
  auto leaves = Gather(args, rets, 2 + Layout::moment::kCount);
  if (!leaves.has_value()) return leaves.error();
  const float* h = hyper.typed_data();
  WithOptions<Layout::option::kCount>(flags, [&](auto options) {
    ForEachRange(*leaves, pool, threads, [&](const Leaf& leaf, int64_t lo, int64_t hi) {
      LoopOver<Rule, decltype(options)>(leaf, lo, hi, h,
                                         std::make_index_sequence<Layout::moment::kCount>{});
    });
  });
  return ffi::Error::Success();
}

}  // namespace

#define GRADTX_BINDING                  \
  ffi::Ffi::Bind()                      \
      .Ctx<ffi::ThreadPool>()           \
      .Arg<ffi::Buffer<ffi::F32>>()     \
      .RemainingArgs()                  \
      .RemainingRets()                  \
      .Attr<int64_t>("threads")         \
      .Attr<int64_t>("flags")

// The symbols are the rules' kernel names (gradtx/recipe.py: Rule.kernel).
XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_sgd, (Kernel<gradtx_layout::sgd, Sgd>), GRADTX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_sgd_momentum, (Kernel<gradtx_layout::trace, Momentum>),
                              GRADTX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_rmsprop, (Kernel<gradtx_layout::scale_by_rms, Rmsprop>),
                              GRADTX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_adam, (Kernel<gradtx_layout::scale_by_adam, Adam>),
                              GRADTX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_adagrad, (Kernel<gradtx_layout::scale_by_rss, Adagrad>),
                              GRADTX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_lion, (Kernel<gradtx_layout::scale_by_lion, Lion>),
                              GRADTX_BINDING);
