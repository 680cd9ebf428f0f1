// What the CUDA entry points do when the device fails them (docs/cuda.md, "Faults"): an allocation
// that fails (the input check, the time split's workspace, a state pool) and a context with a
// sticky error. Each comes back as a Status with the runtime's code and a message naming the step;
// a failed allocation writes nothing (o and the final state keep their poison, bit for bit) and
// leaves the next call healthy.
//
// The sticky case kills the CUDA context of its process, so it is hidden ([.]) and has a ctest
// entry of its own (tests/cuda/CMakeLists.txt: test_cuda_faults_sticky).
#include "support.cuh"

using namespace vtest;

namespace {

/// Takes (nearly) all free device memory with cudaMalloc, largest blocks first, and gives it back
/// when destroyed. The stream-ordered pool is trimmed first, so cudaMallocAsync has nothing cached.
struct MemoryHog {
  std::vector<void*> blocks;
  MemoryHog() {
    int dev = 0;
    cudaMemPool_t pool{};
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
      cudaDeviceSynchronize();
      cudaMemPoolTrimTo(pool, 0);
    }
    for (std::size_t size = std::size_t(1) << 36; size >= (std::size_t(1) << 12); size /= 2)
      for (;;) {
        void* p = nullptr;
        if (cudaMalloc(&p, size) != cudaSuccess) break;
        blocks.push_back(p);
      }
    (void)cudaGetLastError();  // the hog's own failed attempts
  }
  ~MemoryHog() {
    for (void* p : blocks) cudaFree(p);
  }
};

/// A VLA forward's buffers, inputs random, o and the final state poisoned.
struct Case {
  std::int64_t B = 1, T = 96, H = 2, d = 64;
  Tokens t;
  DeviceBuffer<float> q, k, v, u, o;
  DeviceState fin;
  explicit Case(std::mt19937_64& rng)
      : t(make_tokens<float>(B * T, H, d, d, rng)), q(t.q), k(t.k), v(t.v), u(t.u), o(t.v.size()), fin(B * H, d, d) {
    o.poison();
    fin.poison();
  }
  vla::ForwardArgs<float, float> args() {
    vla::ForwardArgs<float, float> a;
    a.batch = B, a.seq_len = T, a.heads = H, a.dk = d, a.dv = d;
    a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.u = u.ptr, a.o = o.ptr;
    a.final_state = fin.buffers();
    return a;
  }
  /// o and the final state still hold the 0xFF poison, every byte.
  bool untouched() const {
    auto poisoned = [](const auto& buf) {
      const auto h = buf.download();
      const auto* b = reinterpret_cast<const unsigned char*>(h.data());
      for (std::size_t i = 0; i < h.size() * sizeof(h[0]); ++i)
        if (b[i] != 0xFF) return false;
      return true;
    };
    return poisoned(o) && poisoned(fin.A) && poisoned(fin.S) && poisoned(fin.z) && poisoned(fin.steps);
  }
};

bool names(const vla::cuda::Status& s, cudaError_t code, const std::string& where) {
  return !s.ok() && s.code == code && s.message.find(where) != std::string::npos &&
         s.message.find(cudaGetErrorName(code)) != std::string::npos;
}

template <int Unused = 0>
__global__ void trap_kernel() {
  __trap();
}

}  // namespace

TEST_CASE("faults: a failed allocation is a Status naming it; nothing is written; the next call is healthy",
          "[cuda][faults]") {
  std::mt19937_64 rng(fresh_seed());
  Case c(rng);
  const vla::Config cfg;
  vla::cuda::Options check;
  check.check_inputs = true;  // allocates a flag on the stream
  vla::cuda::Options split;
  split.time_split = 4;  // allocates its workspace on the stream
  vla::cuda::Status s_check, s_split, s_pool;
  vla::cuda::DeviceStates pool;
  {
    MemoryHog hog;
    INFO("the hog holds " << hog.blocks.size() << " blocks");
    REQUIRE(!hog.blocks.empty());
    s_check = vla::forward<vla::backend::Cuda>(c.args(), cfg, cudaStream_t{}, check);
    s_split = vla::forward<vla::backend::Cuda>(c.args(), cfg, cudaStream_t{}, split);
    s_pool = vla::cuda::DeviceStates::create(1 << 16, 16, 64, 64, cfg, cudaStream_t{}, pool);  // 1.6 GB
    cudaDeviceSynchronize();
  }
  INFO(s_check.message << " | " << s_split.message << " | " << s_pool.message);
  CHECK(names(s_check, cudaErrorMemoryAllocation, "input check (allocation)"));
  CHECK(names(s_split, cudaErrorMemoryAllocation, "time split workspace"));
  CHECK(names(s_pool, cudaErrorMemoryAllocation, "DeviceStates: allocating the pool"));
  CHECK(pool.empty());
  CHECK(c.untouched());
  VT_CUDA(cudaDeviceSynchronize());
  CHECK(cudaGetLastError() == cudaSuccess);  // the failures were reported, not left for the next call

  // Memory back: the same calls succeed, and their results are the float64 reference's.
  const Reference ref = cpu_reference<vla::op::Vla>(c.t, c.B, c.T, nullptr, c.H, c.d, c.d, cfg, nullptr);
  for (const vla::cuda::Options* opt : {&check, &split}) {
    c.o.poison();
    c.fin.poison();
    const vla::cuda::Status st = vla::forward<vla::backend::Cuda>(c.args(), cfg, cudaStream_t{}, *opt);
    INFO(st.message);
    REQUIRE(st.ok());
    VT_CUDA(cudaDeviceSynchronize());
    GpuResult g;
    g.o = to_float(c.o.download());
    g.fin = c.fin.download();
    compare<vla::op::Vla, float>(g, ref, opt == &check ? "after the fault: input check" : "after the fault: time split");
  }
  CHECK(vla::cuda::DeviceStates::create(4, 2, 64, 64, cfg, cudaStream_t{}, pool).ok());
}

TEST_CASE("faults: a sticky error on the context comes back from every entry point, by name", "[.][sticky]") {
  std::mt19937_64 rng(fresh_seed());
  Case c(rng);  // allocated while the context is healthy
  vla::cuda::DeviceStates pool;
  REQUIRE(vla::cuda::DeviceStates::create(2, 2, 64, 64, vla::Config{}, cudaStream_t{}, pool).ok());
  VT_CUDA(cudaDeviceSynchronize());
  trap_kernel<><<<1, 1>>>();
  const cudaError_t sticky = cudaDeviceSynchronize();
  INFO("the trap gave " << cudaGetErrorName(sticky));
  REQUIRE(sticky != cudaSuccess);
  REQUIRE(cudaGetLastError() == sticky);  // sticky: it stays

  const vla::Config cfg;
  vla::cuda::Options check;
  check.check_inputs = true;
  vla::cuda::Options chunked;
  chunked.path = vla::Path::chunked;
  vla::cuda::Options split;
  split.time_split = 4;
  const vla::cuda::Status f = vla::forward<vla::backend::Cuda>(c.args(), cfg, cudaStream_t{});
  const vla::cuda::Status fc = vla::forward<vla::backend::Cuda>(c.args(), cfg, cudaStream_t{}, chunked);
  const vla::cuda::Status fi = vla::forward<vla::backend::Cuda>(c.args(), cfg, cudaStream_t{}, check);
  const vla::cuda::Status fs = vla::forward<vla::backend::Cuda>(c.args(), cfg, cudaStream_t{}, split);
  const vla::cuda::Status fl = vla::forward<vla::backend::Cuda, vla::op::LinearAttention>(c.args(), cfg, cudaStream_t{});
  vla::cuda::DecodeArgs<float> d;
  d.batch = 1, d.heads = 2, d.dk = 64, d.dv = 64;
  d.q = c.q.ptr, d.k = c.k.ptr, d.v = c.v.ptr, d.u = c.u.ptr, d.o = c.o.ptr;
  d.state = pool.buffers();
  const vla::cuda::Status dec = vla::cuda::decode_step<vla::op::Vla>(d, cfg, cudaStream_t{});
  vla::cuda::DeviceStates pool2;
  const vla::cuda::Status cr = vla::cuda::DeviceStates::create(2, 2, 64, 64, cfg, cudaStream_t{}, pool2);
  const vla::cuda::Status rs = pool.reset(0, cudaStream_t{});
  for (const auto* s : {&f, &fc, &fi, &fs, &fl, &dec, &cr, &rs}) {
    INFO(s->message);
    CHECK(!s->ok());
    CHECK(s->code == sticky);
    CHECK(s->message.find(cudaGetErrorName(sticky)) != std::string::npos);
    CHECK(s->message.find("vla::cuda") != std::string::npos);
  }
  CHECK(pool2.empty());
  // Host-side argument errors are still found first, by name, with the context dead.
  vla::ForwardArgs<float, float> bad = c.args();
  bad.heads = 0;
  const vla::cuda::Status b = vla::forward<vla::backend::Cuda>(bad, cfg, cudaStream_t{});
  CHECK(b.code == cudaErrorInvalidValue);
  CHECK(b.message.find("heads") != std::string::npos);
}
