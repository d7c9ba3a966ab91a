// Single-pass CPU kernels for gradtx.fused_update: update plus apply_updates.
//
// XLA:CPU compiles a jax.numpy Adam step to three loops over memory (first
// moment, second moment, params: 40 bytes per float32 parameter). These
// kernels read each parameter, gradient and moment once and write params and
// moments once, in place (28 bytes for Adam). Up to 32 leaves of a tree go to one
// call (gradtx/fused/__init__.py: LEAVES_PER_CALL), not one launch per leaf.
//
// The arithmetic is written in the order of gradtx's jax.numpy blocks, with
// every scalar (1 - b1, the bias corrections, the signed learning rate, ...)
// computed in Python/JAX and passed in `hyper`, so the results agree with the
// unfused path to float32 rounding (tested to rtol 1e-6).
//
// Operands: hyper (f32[k]), then for each leaf its arrays in a fixed order
// (params, grads, then moments). Results: for each leaf params then moments,
// aliased to the inputs. Built on first use by gradtx/fused/build.py.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

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

// The loops take every scalar by value and every array as a restrict pointer,
// with the options as template parameters: no loads of captured state and no
// branches inside, so the compiler vectorises them.

// weight decay: kDecay 0 none, 1 added to the gradient (coupled), 2 added to the
// Adam direction (decoupled, AdamW).
template <int kDecay>
void AdamLoop(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
              const float* __restrict__ g, int64_t n, float neg_lr, float b1, float ob1,
              float b2, float ob2, float r1, float r2, float eps, float eps_root, float wd) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = kDecay == 1 ? g[i] + wd * p[i] : g[i];
    const float mi = ob1 * gi + b1 * m[i];
    const float vi = ob2 * (gi * gi) + b2 * v[i];
    m[i] = mi;
    v[i] = vi;
    float u = (mi * r1) / (std::sqrt(vi * r2 + eps_root) + eps);
    if (kDecay == 2) u = u + wd * p[i];
    p[i] = p[i] + neg_lr * u;
  }
}

// hyper: neg_lr, b1, 1-b1, b2, 1-b2, 1/(1-b1^t), 1/(1-b2^t), eps, eps_root, weight_decay.
// (XLA turns a division by a bias correction into a multiplication by its inverse.)
// flags: the weight-decay mode above.
ffi::Error AdamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> hyper, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, int64_t threads, int64_t flags) {
  auto leaves = Gather(args, rets, 4);
  if (!leaves.has_value()) return leaves.error();
  const float* h = hyper.typed_data();
  const auto loop = flags == 1 ? AdamLoop<1> : flags == 2 ? AdamLoop<2> : AdamLoop<0>;
  ForEachRange(*leaves, pool, threads, [&](const Leaf& leaf, int64_t lo, int64_t hi) {
    loop(leaf.out[0] + lo, leaf.out[1] + lo, leaf.out[2] + lo, leaf.grad + lo, hi - lo, h[0],
         h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]);
  });
  return ffi::Error::Success();
}

template <bool kDecay, bool kNesterov, bool kUnitGain>
void MomentumLoop(float* __restrict__ p, float* __restrict__ t, const float* __restrict__ g,
                  int64_t n, float neg_lr, float mu, float omu, float wd) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = kDecay ? g[i] + wd * p[i] : g[i];
    const float ti = kUnitGain ? omu * gi + mu * t[i] : gi + mu * t[i];
    t[i] = ti;
    const float u = kNesterov ? (kUnitGain ? omu * gi + mu * ti : gi + mu * ti) : ti;
    p[i] = p[i] + neg_lr * u;
  }
}

template <bool kDecay>
void SgdLoop(float* __restrict__ p, const float* __restrict__ g, int64_t n, float neg_lr,
             float wd) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = kDecay ? g[i] + wd * p[i] : g[i];
    p[i] = p[i] + neg_lr * gi;
  }
}

using MomentumFn = void (*)(float*, float*, const float*, int64_t, float, float, float, float);

template <bool kDecay>
MomentumFn PickMomentum(bool nesterov, bool unit_gain) {
  if (nesterov) {
    return unit_gain ? MomentumLoop<kDecay, true, true> : MomentumLoop<kDecay, true, false>;
  }
  return unit_gain ? MomentumLoop<kDecay, false, true> : MomentumLoop<kDecay, false, false>;
}

// hyper: neg_lr, momentum, 1-momentum, weight_decay. flags: bit 0 coupled
// weight decay, bit 1 momentum, bit 2 nesterov, bit 3 unit gain.
ffi::Error SgdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> hyper, ffi::RemainingArgs args, ffi::RemainingRets rets,
                   int64_t threads, int64_t flags) {
  const bool decay = flags & 1, momentum = flags & 2, nesterov = flags & 4, unit = flags & 8;
  auto leaves = Gather(args, rets, momentum ? 3 : 2);
  if (!leaves.has_value()) return leaves.error();
  const float* h = hyper.typed_data();
  if (momentum) {
    const MomentumFn loop =
        decay ? PickMomentum<true>(nesterov, unit) : PickMomentum<false>(nesterov, unit);
    ForEachRange(*leaves, pool, threads, [&](const Leaf& leaf, int64_t lo, int64_t hi) {
      loop(leaf.out[0] + lo, leaf.out[1] + lo, leaf.grad + lo, hi - lo, h[0], h[1], h[2], h[3]);
    });
  } else {
    const auto loop = decay ? SgdLoop<true> : SgdLoop<false>;
    ForEachRange(*leaves, pool, threads, [&](const Leaf& leaf, int64_t lo, int64_t hi) {
      loop(leaf.out[0] + lo, leaf.grad + lo, hi - lo, h[0], h[3]);
    });
  }
  return ffi::Error::Success();
}

template <bool kDecay, bool kInSqrt>
void RmspropLoop(float* __restrict__ p, float* __restrict__ nu, const float* __restrict__ g,
                 int64_t n, float neg_lr, float rho, float orho, float eps, float wd) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = kDecay ? g[i] + wd * p[i] : g[i];
    const float ni = orho * (gi * gi) + rho * nu[i];
    nu[i] = ni;
    const float scale = kInSqrt ? 1.0f / std::sqrt(ni + eps) : 1.0f / (std::sqrt(ni) + eps);
    p[i] = p[i] + neg_lr * (scale * gi);
  }
}

// hyper: neg_lr, decay, 1-decay, eps, weight_decay. flags: bit 0 coupled
// weight decay, bit 1 eps inside the root.
ffi::Error RmspropImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> hyper, ffi::RemainingArgs args,
                       ffi::RemainingRets rets, int64_t threads, int64_t flags) {
  auto leaves = Gather(args, rets, 3);
  if (!leaves.has_value()) return leaves.error();
  const float* h = hyper.typed_data();
  const bool decay = flags & 1, in_sqrt = flags & 2;
  const auto loop = decay ? (in_sqrt ? RmspropLoop<true, true> : RmspropLoop<true, false>)
                          : (in_sqrt ? RmspropLoop<false, true> : RmspropLoop<false, false>);
  ForEachRange(*leaves, pool, threads, [&](const Leaf& leaf, int64_t lo, int64_t hi) {
    loop(leaf.out[0] + lo, leaf.out[1] + lo, leaf.grad + lo, hi - lo, h[0], h[1], h[2], h[3], h[4]);
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_adam, AdamImpl, GRADTX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_sgd, SgdImpl, GRADTX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(gradtx_rmsprop, RmspropImpl, GRADTX_BINDING);
