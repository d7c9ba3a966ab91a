// Single-pass CPU kernels for gradtx.fused_update: update plus apply_updates.
//
// XLA:CPU compiles a jax.numpy Adam step to three loops over memory (first
// moment, second moment, params: 40 bytes per float32 parameter). These
// kernels read each parameter, gradient and moment once and write params and
// moments once, in place (28 bytes for Adam). Up to 32 leaves of a tree go to one
// call (gradtx/buffers.py: LEAVES_PER_RUN), not one launch per leaf.
//
// Each kernel runs one block's per-element rule (a gradtx.recipe.Rule with a
// kernel) and the steps every kernel shares around it (Around and Updates). Its
// arithmetic is written in the order of gradtx's jax.numpy blocks, with every
// scalar (1 - b1, the bias corrections, the signed learning rate, ...) computed
// in Python/JAX and passed in `hyper`, so the results agree with the unfused
// path to float32 rounding (tested to rtol 1e-6).
//
// Operands: hyper (f32[k]), then for each leaf its arrays in a fixed order
// (params, grads, then the rule's moments, then with the momentum option the
// trace). Results: the sums of squares, then for each leaf params then moments,
// aliased to the inputs. The positions of the scalars in hyper, of the
// option bits in `flags` and of the moments come from gradtx_layout.h, which
// gradtx/fused/build.py generates from the rules (gradtx/fused/layout.py) when it
// builds this file on first use.
//
// A kernel for a new rule: declare the rule with kernel="gradtx_<name>" beside
// its block, write its Step in a struct here (the rules below), and bind the
// symbol to Kernel<its layout, that struct> at the end.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
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
  float* params = nullptr;      // updated in place, as are the moments
  std::vector<void*> moments;   // float32 or bfloat16 (the kernel's Moment type)
  const float* grad = nullptr;  // read only
  int64_t size = 0;
};

// A moment kept in float32.
struct F32 {
  using Elem = float;
  static constexpr ffi::DataType kType = ffi::F32;
  float* p;
  uint32_t key;  // unused: nothing is rounded
  float Get(int64_t i) const { return p[i]; }
  float Put(int64_t i, float x) const {
    p[i] = x;
    return x;
  }
};

// A moment kept in bfloat16: widened exactly to compute with, and rounded back as
// gradtx.tree.stochastic_round does (the same bits), with key = seed * 0x9E3779B9.
// Put returns the stored value widened: the plain path computes with what it stores.
struct Bf16 {
  using Elem = uint16_t;
  static constexpr ffi::DataType kType = ffi::BF16;
  uint16_t* p;
  uint32_t key;
  float Get(int64_t i) const {
    const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
    float x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
  }
  float Put(int64_t i, float x) const {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const uint32_t noise = ((bits ^ key) * 0xC2B2AE35u) >> 16;
    const uint32_t kept = (bits + noise) & 0xFFFF0000u;
    p[i] = static_cast<uint16_t>(kept >> 16);
    float y;
    std::memcpy(&y, &kept, sizeof y);
    return y;
  }
};

// Calls fn(leaf, lo, hi) over every element of every leaf, split into
// contiguous ranges of the concatenated leaves, and returns the sum of what
// the calls return (in the order of the ranges, so the same for any timing).
// The ranges run on XLA's own intra-op thread pool (its workers would
// otherwise compete with threads of ours for the cores) and on the calling
// thread; at most `max_threads` ranges (0: as many as the pool has threads),
// each of at least kMinPerThread elements.
//
// Ranges are claimed from a shared counter, by the caller and by the pool
// tasks alike, and the caller waits only for ranges already claimed. XLA may
// run several of these kernels at once, each on a pool worker: a task queued
// behind a busy worker is never waited for (the caller runs its range
// itself, and the task, when it starts, finds nothing left), so kernels
// cannot deadlock the pool waiting for each other.
template <typename Fn>
auto ForEachRange(const std::vector<Leaf>& leaves, ffi::ThreadPool& pool, int64_t max_threads,
                  Fn fn) {
  using Sum = decltype(fn(leaves[0], 0, 0));
  int64_t total = 0;
  for (const Leaf& leaf : leaves) total += leaf.size;
  const int64_t available = max_threads > 0 ? max_threads : pool.num_threads();
  const int64_t threads = std::max<int64_t>(1, std::min(available, total / kMinPerThread));
  const int64_t chunk = (total + threads - 1) / threads;
  std::vector<Sum> sums(threads);
  auto work = [&](int64_t t) {
    const int64_t begin = t * chunk, end = std::min(total, begin + chunk);
    int64_t start = 0;
    for (const Leaf& leaf : leaves) {
      const int64_t lo = std::max(begin, start), hi = std::min(end, start + leaf.size);
      if (lo < hi) sums[t] += fn(leaf, lo - start, hi - start);
      start += leaf.size;
    }
  };
  if (threads == 1) {
    work(0);
    return sums[0];
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
  Sum sum{};
  for (const Sum& part : sums) sum += part;
  return sum;
}

// Reads `per_leaf` operands per leaf (params, grads, moments...) and the
// matching `per_leaf - 1` results (params, moments...), the moments of type
// kMoment. Operands after the leaves' are never read: they only order the call
// after whatever computes them (the loss, which reads the params this call
// overwrites).
template <ffi::DataType kMoment>
ffi::ErrorOr<std::vector<Leaf>> Gather(ffi::RemainingArgs args, ffi::RemainingRets rets,
                                       size_t per_leaf) {
  const size_t count = rets.size() / (per_leaf - 1);
  if (rets.size() % (per_leaf - 1) != 0 || args.size() < count * per_leaf) {
    return ffi::Unexpected(ffi::Error::InvalidArgument("gradtx fused: wrong operand count"));
  }
  std::vector<Leaf> leaves(count);
  for (size_t i = 0; i < leaves.size(); ++i) {
    Leaf& leaf = leaves[i];
    auto grad = args.get<ffi::Buffer<ffi::F32>>(i * per_leaf + 1);
    if (!grad.has_value()) return ffi::Unexpected(grad.error());
    leaf.grad = grad->typed_data();
    leaf.size = static_cast<int64_t>(grad->element_count());
    auto params = rets.get<ffi::Buffer<ffi::F32>>(i * (per_leaf - 1));
    if (!params.has_value()) return ffi::Unexpected(params.error());
    if (static_cast<int64_t>((*params)->element_count()) != leaf.size) {
      return ffi::Unexpected(ffi::Error::InvalidArgument("gradtx fused: shape mismatch"));
    }
    leaf.params = (*params)->typed_data();
    for (size_t j = 1; j + 1 < per_leaf; ++j) {
      auto out = rets.get<ffi::Buffer<kMoment>>(i * (per_leaf - 1) + j);
      if (!out.has_value()) return ffi::Unexpected(out.error());
      if (static_cast<int64_t>((*out)->element_count()) != leaf.size) {
        return ffi::Unexpected(ffi::Error::InvalidArgument("gradtx fused: shape mismatch"));
      }
      leaf.moments.push_back((*out)->typed_data());
    }
  }
  return leaves;
}

// The option bits of one call as compile-time constants: Options<flags>::on(bit).
template <int64_t kFlags>
struct Options {
  static constexpr bool on(int bit) { return (kFlags >> bit) & 1; }
};

// Calls fn(Options<the bits of flags within kMask>{}), kFlags holding those read so far:
// one instantiation per setting of kMask's bits, the others always off.
template <int64_t kMask, int64_t kFlags = 0, class Fn>
void WithOptions(int64_t flags, const Fn& fn) {
  constexpr int64_t kLow = kMask & -kMask;  // the lowest bit still to read
  if constexpr (kMask == 0) {
    fn(Options<kFlags>{});
  } else if (flags & kLow) {
    WithOptions<kMask - kLow, kFlags | kLow>(flags, fn);
  } else {
    WithOptions<kMask - kLow, kFlags>(flags, fn);
  }
}

// Heavy-ball momentum, as gradtx.trace: t = g + mu t (or (1 - mu) g + mu t with
// unit gain), and the direction t (or, with nesterov, the same sum with the new t).
// The fmas are written out as XLA contracts those sums (mu t into g, (1 - mu) g into
// mu t): given rate * d as g, the compiler would contract that product instead.
// Its options are constants in the trace rule and read at run time by the momentum
// option, where both sums are computed and one kept (the same roundings), so that
// its loops are compiled once, not once per setting.
struct Trace {
  float mu, omu;
  bool nesterov, unit_gain;
  float Add(float g, float t) const {
    const float unit = std::fma(omu, g, mu * t), plain = std::fma(mu, t, g);
    return unit_gain ? unit : plain;
  }
  template <class M>
  float Step(float g, int64_t i, const M& t) const {
    const float ti = t.Put(i, Add(g, t.Get(i)));
    const float ahead = Add(g, ti);
    return nesterov ? ahead : ti;
  }
};

// What every kernel does around its rule up to the rate, in the recipe's order:
// the gradient is scaled (clip_by_global_norm) and coupled weight decay added
// before the rule; decoupled weight decay is added to its direction after it.
template <class O>
struct Around {
  using S = gradtx_layout::shared::scalar;
  using B = gradtx_layout::shared::option;
  float grad_scale, coupled, decoupled;
  explicit Around(const float* h)
      : grad_scale(h[S::kGradScale]), coupled(h[S::kCoupledDecay]),
        decoupled(h[S::kDecoupledDecay]) {}
  float In(float g, float p) const {
    // Scaling only with the option: a multiplication by 1 would change how the
    // compiler contracts the rule's a * b + c, and so its rounding.
    const float gi = O::on(B::kGradScale) ? grad_scale * g : g;
    return O::on(B::kCoupledDecay) ? gi + coupled * p : gi;
  }
  float Decayed(float direction, float p) const {
    return O::on(B::kDecoupledDecay) ? direction + decoupled * p : direction;
  }
};

// The rules. Each reads its scalars once per call and gives, in Step, one
// element's direction from its gradient (scaled and decayed), updating that
// element's moments (m0, m1, ... in the rule's order, layout's moment::k*)
// through Get and Put (F32 or Bf16). The arithmetic follows the jax.numpy
// block's, operation for operation.

// jnp.sign: -1 or 1, and zeros and NaNs as they are. Both values computed, then one
// selected: a branch on the sign of random gradients mispredicts half the time.
inline float Sign(float x) {
  const float unit = std::copysign(1.0f, x);
  return (x == 0.0f) | (x != x) ? x : unit;
}

// With the sign option (a scale_by_sign after it), signSGD.
template <class O>
struct Sgd {
  static constexpr bool kSign = O::on(gradtx_layout::sgd::option::kSign);
  explicit Sgd(const float*) {}
  template <class M>
  float Step(float g, int64_t, const M&, const M&, const M&, const M&) const {
    return kSign ? Sign(g) : g;
  }
};

// gradtx.ema: the average times its inverse bias correction (1 without debiasing); with the
// sign option (a scale_by_sign after it) its sign, Signum.
template <class O>
struct Ema {
  using S = gradtx_layout::ema::scalar;
  static constexpr bool kSign = O::on(gradtx_layout::ema::option::kSign);
  float decay, odecay, r;
  explicit Ema(const float* h)
      : decay(h[S::kDecay]), odecay(h[S::kOneMinusDecay]), r(h[S::kInvBiasCorrection]) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M&, const M&, const M&) const {
    const float mi = m.Put(i, odecay * g + decay * m.Get(i));
    const float d = mi * r;
    return kSign ? Sign(d) : d;
  }
};

template <class O>
struct Momentum {
  using S = gradtx_layout::trace::scalar;
  using B = gradtx_layout::trace::option;
  Trace trace;
  explicit Momentum(const float* h)
      : trace{h[S::kDecay], h[S::kOneMinusDecay], O::on(B::kNesterov), O::on(B::kUnitGain)} {}
  template <class M>
  float Step(float g, int64_t i, const M& t, const M&, const M&, const M&) const {
    return trace.Step(g, i, t);
  }
};

// jnp.maximum: the larger, and NaN where either is NaN.
inline float Max(float a, float b) {
  const float larger = a > b ? a : b;
  return a != a ? a : larger;
}

// _inverse_root in gradtx/transforms/adaptive.py: 1/sqrt(v + eps) or 1/(sqrt(v) + eps).
template <bool kInSqrt>
float InverseRoot(float v, float eps) {
  return kInSqrt ? 1.0f / std::sqrt(v + eps) : 1.0f / (std::sqrt(v) + eps);
}

template <class O>
struct Rmsprop {
  using S = gradtx_layout::scale_by_rms::scalar;
  static constexpr bool kInSqrt = O::on(gradtx_layout::scale_by_rms::option::kEpsInSqrt);
  float rho, orho, eps;
  explicit Rmsprop(const float* h)
      : rho(h[S::kDecay]), orho(h[S::kOneMinusDecay]), eps(h[S::kEps]) {}
  template <class M>
  float Step(float g, int64_t i, const M& nu, const M&, const M&, const M&) const {
    const float ni = nu.Put(i, orho * (g * g) + rho * nu.Get(i));
    return InverseRoot<kInSqrt>(ni, eps) * g;
  }
};

// scale_by_stddev: the variance nu - mu^2, clamped at 0, in place of nu.
template <class O>
struct CenteredRmsprop {
  using S = gradtx_layout::scale_by_stddev::scalar;
  static constexpr bool kInSqrt = O::on(gradtx_layout::scale_by_stddev::option::kEpsInSqrt);
  float rho, orho, eps;
  explicit CenteredRmsprop(const float* h)
      : rho(h[S::kDecay]), orho(h[S::kOneMinusDecay]), eps(h[S::kEps]) {}
  template <class M>
  float Step(float g, int64_t i, const M& mu, const M& nu, const M&, const M&) const {
    const float mi = mu.Put(i, orho * g + rho * mu.Get(i));
    const float ni = nu.Put(i, orho * (g * g) + rho * nu.Get(i));
    return InverseRoot<kInSqrt>(Max(ni - mi * mi, 0.0f), eps) * g;
  }
};

template <class O>
struct Adam {
  using S = gradtx_layout::scale_by_adam::scalar;
  static constexpr bool kNesterov = O::on(gradtx_layout::scale_by_adam::option::kNesterov);
  float b1, ob1, b2, ob2, r1_next, r1, r2, eps, eps_root;
  // XLA turns a division by a bias correction into a multiplication by its inverse.
  explicit Adam(const float* h)
      : b1(h[S::kB1]), ob1(h[S::kOneMinusB1]), b2(h[S::kB2]), ob2(h[S::kOneMinusB2]),
        r1_next(h[S::kInvNextBiasCorrection1]), r1(h[S::kInvBiasCorrection1]),
        r2(h[S::kInvBiasCorrection2]), eps(h[S::kEps]), eps_root(h[S::kEpsRoot]) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M& v, const M&, const M&) const {
    const float mi = m.Put(i, ob1 * g + b1 * m.Get(i));
    const float vi = v.Put(i, ob2 * (g * g) + b2 * v.Get(i));
    // NAdam looks ahead: b1 m_t / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t).
    const float mh = kNesterov ? std::fma(b1, mi * r1_next, ob1 * (g * r1)) : mi * r1;
    return mh / (std::sqrt(vi * r2 + eps_root) + eps);
  }
};

// AMSGrad: Adam divided by the running maximum of the bias-corrected nu.
template <class O>
struct Amsgrad {
  using S = gradtx_layout::scale_by_amsgrad::scalar;
  float b1, ob1, b2, ob2, r1, r2, eps, eps_root;
  explicit Amsgrad(const float* h)
      : b1(h[S::kB1]), ob1(h[S::kOneMinusB1]), b2(h[S::kB2]), ob2(h[S::kOneMinusB2]),
        r1(h[S::kInvBiasCorrection1]), r2(h[S::kInvBiasCorrection2]), eps(h[S::kEps]),
        eps_root(h[S::kEpsRoot]) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M& v, const M& v_max, const M&) const {
    const float mi = m.Put(i, ob1 * g + b1 * m.Get(i));
    const float vi = v.Put(i, ob2 * (g * g) + b2 * v.Get(i));
    const float vmi = v_max.Put(i, Max(v_max.Get(i), vi * r2));
    return (mi * r1) / (std::sqrt(vmi + eps_root) + eps);
  }
};

// Adamax: the first moment over a decaying infinity norm of the gradients.
template <class O>
struct Adamax {
  using S = gradtx_layout::scale_by_adamax::scalar;
  float b1, ob1, b2, eps, r1;
  explicit Adamax(const float* h)
      : b1(h[S::kB1]), ob1(h[S::kOneMinusB1]), b2(h[S::kB2]), eps(h[S::kEps]),
        r1(h[S::kInvBiasCorrection1]) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M& u, const M&, const M&) const {
    const float mi = m.Put(i, ob1 * g + b1 * m.Get(i));
    const float ui = u.Put(i, Max(std::fabs(g) + eps, b2 * u.Get(i)));
    return (mi * r1) / ui;
  }
};

// AdaBelief: Adam's first moment; the second is the average of (g - m_t)^2, plus eps_root
// each step, and eps_root is not added again under the root.
template <class O>
struct Belief {
  using S = gradtx_layout::scale_by_belief::scalar;
  static constexpr bool kNesterov = O::on(gradtx_layout::scale_by_belief::option::kNesterov);
  float b1, ob1, b2, ob2, r1_next, r1, r2, eps, eps_root;
  explicit Belief(const float* h)
      : b1(h[S::kB1]), ob1(h[S::kOneMinusB1]), b2(h[S::kB2]), ob2(h[S::kOneMinusB2]),
        r1_next(h[S::kInvNextBiasCorrection1]), r1(h[S::kInvBiasCorrection1]),
        r2(h[S::kInvBiasCorrection2]), eps(h[S::kEps]), eps_root(h[S::kEpsRoot]) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M& s, const M&, const M&) const {
    const float mi = m.Put(i, ob1 * g + b1 * m.Get(i));
    const float surprise = g - mi;
    const float si = s.Put(i, (ob2 * (surprise * surprise) + b2 * s.Get(i)) + eps_root);
    const float mh = kNesterov ? std::fma(b1, mi * r1_next, ob1 * (g * r1)) : mi * r1;
    return mh / (std::sqrt(si * r2) + eps);
  }
};

// Yogi: the second moment moves by (1 - b2) g^2 towards g^2, in the direction of the sign.
template <class O>
struct Yogi {
  using S = gradtx_layout::scale_by_yogi::scalar;
  float b1, ob1, ob2, r1, r2, eps, eps_root;
  explicit Yogi(const float* h)
      : b1(h[S::kB1]), ob1(h[S::kOneMinusB1]), ob2(h[S::kOneMinusB2]),
        r1(h[S::kInvBiasCorrection1]), r2(h[S::kInvBiasCorrection2]), eps(h[S::kEps]),
        eps_root(h[S::kEpsRoot]) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M& v, const M&, const M&) const {
    const float mi = m.Put(i, ob1 * g + b1 * m.Get(i));
    const float g2 = g * g, vo = v.Get(i);
    const float vi = v.Put(i, vo - ob2 * Sign(vo - g2) * g2);
    return (mi * r1) / (std::sqrt(vi * r2 + eps_root) + eps);
  }
};

// RAdam: Adam's moments; the step is the rectifier times Adam's once rho_t reaches the
// threshold (the `rectified` scalar is 1), else the corrected first moment alone.
template <class O>
struct Radam {
  using S = gradtx_layout::scale_by_radam::scalar;
  static constexpr bool kNesterov = O::on(gradtx_layout::scale_by_radam::option::kNesterov);
  float b1, ob1, b2, ob2, r1_next, r1, r2, eps, eps_root, rectifier;
  bool rectified;
  explicit Radam(const float* h)
      : b1(h[S::kB1]), ob1(h[S::kOneMinusB1]), b2(h[S::kB2]), ob2(h[S::kOneMinusB2]),
        r1_next(h[S::kInvNextBiasCorrection1]), r1(h[S::kInvBiasCorrection1]),
        r2(h[S::kInvBiasCorrection2]), eps(h[S::kEps]), eps_root(h[S::kEpsRoot]),
        rectifier(h[S::kRectifier]), rectified(h[S::kRectified] != 0.0f) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M& v, const M&, const M&) const {
    const float mi = m.Put(i, ob1 * g + b1 * m.Get(i));
    const float vi = v.Put(i, ob2 * (g * g) + b2 * v.Get(i));
    const float mh = kNesterov ? std::fma(b1, mi * r1_next, ob1 * (g * r1)) : mi * r1;
    const float adam = (rectifier * mh) / (std::sqrt(vi * r2 + eps_root) + eps);
    return rectified ? adam : mh;
  }
};

template <class O>
struct Adagrad {
  static constexpr bool kInSqrt = O::on(gradtx_layout::scale_by_rss::option::kEpsInSqrt);
  float eps;
  explicit Adagrad(const float* h) : eps(h[gradtx_layout::scale_by_rss::scalar::kEps]) {}
  template <class M>
  float Step(float g, int64_t i, const M& sums, const M&, const M&, const M&) const {
    const float si = sums.Put(i, g * g + sums.Get(i));
    return (si > 0.0f ? InverseRoot<kInSqrt>(si, eps) : 0.0f) * g;
  }
};

template <class O>
struct Lion {
  using S = gradtx_layout::scale_by_lion::scalar;
  float b1, ob1, b2, ob2;
  explicit Lion(const float* h)
      : b1(h[S::kB1]), ob1(h[S::kOneMinusB1]), b2(h[S::kB2]), ob2(h[S::kOneMinusB2]) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M&, const M&, const M&) const {
    const float old = m.Get(i);
    m.Put(i, ob2 * g + b2 * old);
    return Sign(ob1 * g + b1 * old);
  }
};

// jnp.minimum: the smaller, and NaN where either is NaN.
inline float Min(float a, float b) {
  const float smaller = a < b ? a : b;
  return a != a ? a : smaller;
}

// Rprop (iRprop-): a step size per entry, grown by eta+ while the gradient agrees with the
// last step, cut by eta- (and no step taken) where it flips; lagged hands back the last step.
template <class O>
struct Rprop {
  using S = gradtx_layout::scale_by_rprop::scalar;
  static constexpr bool kLagged = O::on(gradtx_layout::scale_by_rprop::option::kLagged);
  float eta_minus, eta_plus, smallest, largest;
  explicit Rprop(const float* h)
      : eta_minus(h[S::kEtaMinus]), eta_plus(h[S::kEtaPlus]), smallest(h[S::kMinStepSize]),
        largest(h[S::kMaxStepSize]) {}
  template <class M>
  float Step(float g, int64_t i, const M& sizes, const M& steps, const M&, const M&) const {
    const float last = steps.Get(i), size = sizes.Get(i);
    const float agreement = g * last;
    const float resized = Min(Max(size * (agreement > 0.0f ? eta_plus : eta_minus), smallest),
                              largest);  // jnp.clip: maximum, then minimum
    const float si = sizes.Put(i, agreement == 0.0f ? size : resized);
    const bool flipped = agreement < 0.0f;
    const float step = steps.Put(i, flipped ? 0.0f : si * Sign(g));
    return kLagged ? (flipped ? 0.0f : last) : step;
  }
};

// a if the mask is all ones, b if it is 0: a select the compiler cannot turn into two loops
// on a condition fixed for the call (it did, and left the one for a false condition scalar).
inline float Pick(uint32_t mask, float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, sizeof x);
  std::memcpy(&y, &b, sizeof y);
  const uint32_t bits = (x & mask) | (y & ~mask);
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// The optimistic gradient: (alpha + beta) g - beta g_prev, g_prev = g at the first step.
template <class O>
struct Optimistic {
  using S = gradtx_layout::scale_by_optimistic_gradient::scalar;
  float alpha_plus_beta, beta;
  uint32_t initial;  // all ones at the first step
  explicit Optimistic(const float* h)
      : alpha_plus_beta(h[S::kAlphaPlusBeta]), beta(h[S::kBeta]),
        initial(h[S::kInitial] != 0.0f ? ~0u : 0u) {}
  template <class M>
  float Step(float g, int64_t i, const M& previous, const M&, const M&, const M&) const {
    const float last = Pick(initial, g, previous.Get(i));
    previous.Put(i, g);
    return std::fma(alpha_plus_beta, g, -(beta * last));
  }
};

// optimistic_adam and optimistic_adam_v2: Adam's direction, then its optimistic
// correction, in one pass (recipe.composite: Adam's scalars, options and moments, then
// the correction's, so each part reads its own at an offset).
template <class O>
struct OptimisticAdam {
  using L = gradtx_layout::optimistic_adam;
  using A = gradtx_layout::scale_by_adam;
  using C = gradtx_layout::scale_by_optimistic_gradient;
  static constexpr int kOffset = L::scalar::kAlphaPlusBeta - C::scalar::kAlphaPlusBeta;
  static_assert(L::scalar::kB1 == A::scalar::kB1 && L::scalar::kEpsRoot == A::scalar::kEpsRoot &&
                L::scalar::kAlphaPlusBeta == A::scalar::kCount);
  static_assert(L::scalar::kBeta - C::scalar::kBeta == kOffset &&
                L::scalar::kInitial - C::scalar::kInitial == kOffset);
  static_assert(L::option::kNesterov == A::option::kNesterov && L::option::kCount == A::option::kCount);
  static_assert(L::moment::kMu == A::moment::kMu && L::moment::kNu == A::moment::kNu &&
                L::moment::kPreviousGradient == A::moment::kCount &&
                C::moment::kPreviousGradient == 0);
  Adam<O> adam;
  Optimistic<O> correction;
  explicit OptimisticAdam(const float* h) : adam(h), correction(h + kOffset) {}
  template <class M>
  float Step(float g, int64_t i, const M& mu, const M& nu, const M& previous, const M& none) const {
    return correction.Step(adam.Step(g, i, mu, nu, none, none), i, previous, none, none, none);
  }
};

// Adan: averages of the gradient (m), of its change d (v) and of |g + (1 - b2) d|^2 (n),
// the last gradient kept for the next d (0 at the first step).
template <class O>
struct Adan {
  using S = gradtx_layout::scale_by_adan::scalar;
  float b1, ob1, b2, ob2, b3, ob3, r1, r2, r3, eps, eps_root;
  uint32_t first;  // all ones at the first step
  explicit Adan(const float* h)
      : b1(h[S::kB1]), ob1(h[S::kOneMinusB1]), b2(h[S::kB2]), ob2(h[S::kOneMinusB2]),
        b3(h[S::kB3]), ob3(h[S::kOneMinusB3]), r1(h[S::kInvBiasCorrection1]),
        r2(h[S::kInvBiasCorrection2]), r3(h[S::kInvBiasCorrection3]), eps(h[S::kEps]),
        eps_root(h[S::kEpsRoot]), first(h[S::kFirst] != 0.0f ? ~0u : 0u) {}
  template <class M>
  float Step(float g, int64_t i, const M& m, const M& v, const M& n, const M& last) const {
    const float d = Pick(first, 0.0f, g - last.Get(i));
    const float mi = m.Put(i, ob1 * g + b1 * m.Get(i));
    // The fmas as XLA contracts the jax.numpy block's sums (found by comparing the bits):
    // v's the other way round where it reads v widened from bfloat16.
    const float vo = v.Get(i);
    const float vi = v.Put(i, M::kType == ffi::BF16 ? std::fma(ob2, d, b2 * vo)
                                                     : std::fma(b2, vo, ob2 * d));
    const float sq = std::fma(ob2, d, g);
    const float ni = n.Put(i, std::fma(b3, n.Get(i), ob3 * (sq * sq)));
    last.Put(i, g);
    return (mi * r1 + ob2 * (vi * r2)) / (std::sqrt(ni * r3 + eps_root) + eps);
  }
};

// The sums of squares of one range's gradients (as given, before any scaling) and of
// its updates, for make_train_step's grad_norm and update_norm.
struct Squares {
  double grad = 0.0, update = 0.0;
  Squares& operator+=(const Squares& other) {
    grad += other.grad;
    update += other.update;
    return *this;
  }
};

// Software prefetch into L1 of the elements [from, from + kBlock) of an array, one
// instruction per cache line, for writing where the loop writes it; nothing past the
// range's end (x null: no such array). The loop asks for the block kPrefetchAhead
// elements ahead of the one it computes. Left to the hardware prefetcher, a loop
// streaming three or more arrays from the last-level cache got 0.8x the bandwidth of
// a two-array triad (Adam's kernel 1.3x of the triad's time for its bytes, SGD with
// momentum's 1.0x, Lion's 1.2x on the same arrays); with it, Lion's 1.0x and Adam's
// 1.1x (docs/performance.md, "The roofline"). One block ends in one reduction of the
// sums' lanes.
constexpr int64_t kBlock = 256, kPrefetchAhead = 512;

template <class T>
void Prefetch(const T* x, int64_t from, int64_t n, bool written) {
  if (x == nullptr || from + kBlock > n) return;
  constexpr int64_t kPerLine = 64 / sizeof(T);
  for (int64_t c = from; c < from + kBlock; c += kPerLine) {
    if (written) {
      __builtin_prefetch(x + c, 1, 3);
    } else {
      __builtin_prefetch(x + c, 0, 3);
    }
  }
}

// One range of one leaf: every array a restrict pointer and every scalar read into
// a local first, the options template parameters (the momentum's own aside: see
// Trace), so the loop has no loads of captured state and no branches, and the
// compiler vectorises it. m0 to m3 are the rule's moments and t the momentum
// option's trace, each null where absent, all stored as M (F32 or Bf16); the
// rule's moments round with the keys of seeds[0] to seeds[3] (one each, as each
// block's moments round with its own), the trace with that of seeds[4].
template <template <class> class Rule, class O, class M>
Squares Loop(float* __restrict__ p, typename M::Elem* __restrict__ m0,
             typename M::Elem* __restrict__ m1, typename M::Elem* __restrict__ m2,
             typename M::Elem* __restrict__ m3, typename M::Elem* __restrict__ t,
             const float* __restrict__ g, int64_t n,
             const float* h, const uint32_t* seeds, int64_t flags) {
  using S = gradtx_layout::shared::scalar;
  using B = gradtx_layout::shared::option;
  const Around<O> around(h);
  const Rule<O> rule(h);
  const float rate = h[S::kRate];
  const Trace momentum{h[S::kMomentum], h[S::kOneMinusMomentum],
                       ((flags >> B::kMomentumNesterov) & 1) != 0,
                       ((flags >> B::kMomentumUnitGain) & 1) != 0};
  auto key = [seeds](int k) { return seeds[k] * 0x9E3779B9u; };
  const M a0{m0, key(0)}, a1{m1, key(1)}, a2{m2, key(2)}, a3{m3, key(3)}, trace{t, key(4)};
  // The sums of squares in float32 over each block (each vector lane adds kBlock / lanes
  // squares), then in float64: a conversion to double per element made the lightest
  // loops (signSGD's 12 bytes per element) compute-bound.
  double grad = 0.0, update = 0.0;
  for (int64_t lo = 0; lo < n; lo += kBlock) {
    const int64_t hi = std::min(n, lo + kBlock), ahead = lo + kPrefetchAhead;
    Prefetch(p, ahead, n, true);
    Prefetch(g, ahead, n, false);
    for (const auto* moment : {m0, m1, m2, m3, t}) Prefetch(moment, ahead, n, true);
    float grad_block = 0.0f, update_block = 0.0f;
#pragma omp simd reduction(+ : grad_block, update_block)
    for (int64_t i = lo; i < hi; ++i) {
      const float d = around.Decayed(rule.Step(around.In(g[i], p[i]), i, a0, a1, a2, a3), p[i]);
      float u;
      if constexpr (O::on(B::kMomentum)) {  // the trace of the scaled steps, then p + t
        u = momentum.Step(rate * d, i, trace);
        p[i] = p[i] + u;
      } else {
        // p + rate * d in one rounding, as XLA contracts apply_updates(p, scale(rate)(d));
        // the update the norm sums is rounded on its own (a product with two uses is
        // never contracted).
        p[i] = std::fma(rate, d, p[i]);
        u = rate * d;
      }
      // As fmas: a product g * g shared with the rule (Adagrad's g * g + s) would no longer
      // be contracted there as XLA contracts it.
      grad_block = std::fma(g[i], g[i], grad_block);
      update_block = std::fma(u, u, update_block);
    }
    grad += grad_block;
    update += update_block;
  }
  return {grad, update};
}

template <class M>
using LoopFn = Squares (*)(float*, typename M::Elem*, typename M::Elem*, typename M::Elem*,
                           typename M::Elem*, typename M::Elem*, const float*, int64_t,
                           const float*, const uint32_t*, int64_t);

// The handler of one kernel: checks the call against its layout (gradtx_layout.h), then
// runs Rule, its options as template parameters and its moments stored as M, over every
// range of every leaf, and writes the sums of squares of the gradients and updates to
// `squares`. `seeds` holds the rounding seeds of the rule's four moment places and of
// the momentum's trace (see Bf16).
template <class Layout, template <class> class Rule, class M>
ffi::Error Kernel(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> hyper, ffi::Buffer<ffi::U32> seeds,
                  ffi::ResultBuffer<ffi::F32> squares, ffi::RemainingArgs args,
                  ffi::RemainingRets rets, int64_t threads, int64_t flags) {
  constexpr size_t kMoments = Layout::moment::kCount;
  static_assert(kMoments <= gradtx_layout::kMomentPlaces, "Loop takes four moments at most");
  if (static_cast<int64_t>(hyper.element_count()) != Layout::scalar::kCount) {
    return ffi::Error::InvalidArgument("gradtx fused: wrong number of scalars");
  }
  if (flags < 0 || flags >> Layout::option::kCount) {
    return ffi::Error::InvalidArgument("gradtx fused: unknown option bits");
  }
  if (seeds.element_count() != gradtx_layout::kSeeds) {
    return ffi::Error::InvalidArgument("gradtx fused: wrong number of seeds");
  }
  if (squares->element_count() != 2) {
    return ffi::Error::InvalidArgument("gradtx fused: the squares result takes two floats");
  }
  // With the momentum option each leaf's trace follows the rule's moments.
  using B = gradtx_layout::shared::option;
  const size_t traced = (flags >> B::kMomentum) & 1;
  auto leaves = Gather<M::kType>(args, rets, 2 + kMoments + traced);
  if (!leaves.has_value()) return leaves.error();
  // One loop per setting of the options (but the momentum's own, read at run time),
  // chosen here, so that the rest is compiled once per kernel.
  constexpr int64_t kOfMomentum = (1 << B::kMomentumNesterov) | (1 << B::kMomentumUnitGain);
  LoopFn<M> loop = nullptr;
  WithOptions<((int64_t{1} << Layout::option::kCount) - 1) & ~kOfMomentum>(
      flags, [&](auto options) { loop = &Loop<Rule, decltype(options), M>; });
  const float* h = hyper.typed_data();
  const uint32_t* s = seeds.typed_data();
  using E = typename M::Elem;
  const Squares total =
      ForEachRange(*leaves, pool, threads, [&](const Leaf& leaf, int64_t lo, int64_t hi) {
        E* m[kMoments + 1] = {};  // the rule's moments, then the trace (or null)
        for (size_t k = 0; k < kMoments + traced; ++k) m[k] = static_cast<E*>(leaf.moments[k]) + lo;
        auto rule_moment = [&](size_t k) { return k < kMoments ? m[k] : nullptr; };
        return loop(leaf.params + lo, rule_moment(0), rule_moment(1), rule_moment(2),
                    rule_moment(3), m[kMoments], leaf.grad + lo, hi - lo, h, s, flags);
      });
  squares->typed_data()[0] = static_cast<float>(total.grad);
  squares->typed_data()[1] = static_cast<float>(total.update);
  return ffi::Error::Success();
}

// Its first operand, unchanged; the others are never read. Whatever uses the
// result runs after whatever computes them (gradtx/fused/__init__.py: after).
ffi::Error After(ffi::AnyBuffer value, ffi::Result<ffi::AnyBuffer> out, ffi::RemainingArgs) {
  if (value.size_bytes() != out->size_bytes()) {
    return ffi::Error::InvalidArgument("gradtx after: the result must match the value");
  }
  if (out->untyped_data() != value.untyped_data()) {
    std::memcpy(out->untyped_data(), value.untyped_data(), value.size_bytes());
  }
  return ffi::Error::Success();
}

}  // namespace

#define GRADTX_BINDING                  \
  ffi::Ffi::Bind()                      \
      .Ctx<ffi::ThreadPool>()           \
      .Arg<ffi::Buffer<ffi::F32>>()     \
      .Arg<ffi::Buffer<ffi::U32>>()     \
      .Ret<ffi::Buffer<ffi::F32>>()     \
      .RemainingArgs()                  \
      .RemainingRets()                  \
      .Attr<int64_t>("threads")         \
      .Attr<int64_t>("flags")

// The symbols are the rules' kernel names (gradtx/recipe.py: Rule.kernel) for float32
// moments, and the same with _bf16 for bfloat16 ones. build.py compiles this file once
// for each (GRADTX_BF16 0 or 1), side by side, and links both (gradtx/fused/layout.py:
// symbol).
#if GRADTX_BF16
#define GRADTX_KERNEL(name, layout, rule) \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name##_bf16, (Kernel<gradtx_layout::layout, rule, Bf16>), \
                                GRADTX_BINDING);
#else
#define GRADTX_KERNEL(name, layout, rule) \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, (Kernel<gradtx_layout::layout, rule, F32>), \
                                GRADTX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    gradtx_after, After,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().RemainingArgs());
#endif

GRADTX_KERNEL(gradtx_sgd, sgd, Sgd)
GRADTX_KERNEL(gradtx_sgd_momentum, trace, Momentum)
GRADTX_KERNEL(gradtx_rmsprop, scale_by_rms, Rmsprop)
GRADTX_KERNEL(gradtx_rmsprop_centered, scale_by_stddev, CenteredRmsprop)
GRADTX_KERNEL(gradtx_adam, scale_by_adam, Adam)
GRADTX_KERNEL(gradtx_amsgrad, scale_by_amsgrad, Amsgrad)
GRADTX_KERNEL(gradtx_adamax, scale_by_adamax, Adamax)
GRADTX_KERNEL(gradtx_adagrad, scale_by_rss, Adagrad)
GRADTX_KERNEL(gradtx_lion, scale_by_lion, Lion)
GRADTX_KERNEL(gradtx_ema, ema, Ema)
GRADTX_KERNEL(gradtx_belief, scale_by_belief, Belief)
GRADTX_KERNEL(gradtx_yogi, scale_by_yogi, Yogi)
GRADTX_KERNEL(gradtx_radam, scale_by_radam, Radam)
GRADTX_KERNEL(gradtx_rprop, scale_by_rprop, Rprop)
GRADTX_KERNEL(gradtx_optimistic, scale_by_optimistic_gradient, Optimistic)
GRADTX_KERNEL(gradtx_adan, scale_by_adan, Adan)
GRADTX_KERNEL(gradtx_optimistic_adam, optimistic_adam, OptimisticAdam)
