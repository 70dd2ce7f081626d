// The fused scan's passes (torch_triton.py) run from C++: torch_host.py says why and how.
//
// A pass is what torch_triton plans for one layout: buffers (shape, dtype), launches (each a
// compiled Triton kernel's CUfunction, grid, block, shared memory, whether it launches as a
// programmatic dependent, its parameter slots with the integers in and the tensors' slots
// to fill), and the table places it returns. `run` does what torch_triton's `_run` does,
// without Python: allocate each buffer when the first launch that takes it comes, write the
// tensors' addresses into a copy of the slots, and call cuLaunchKernelEx (its address comes
// from Python, so the tests can give a fake). `scan` is selective_scan as one op, with the
// backward as a C++ autograd node: autograd's device thread runs it without taking the GIL.

#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

namespace {

// cuda.h's CUlaunchAttribute and CUlaunchConfig (torch_driver.py declares them for ctypes)
struct LaunchAttribute {
  int32_t id;
  char pad[4];
  int32_t value;
  char rest[60];
};

struct LaunchConfig {
  uint32_t grid[3];
  uint32_t block[3];
  uint32_t shared;
  void* stream;
  LaunchAttribute* attrs;
  uint32_t num_attrs;
};

static_assert(sizeof(LaunchAttribute) == 72, "CUlaunchAttribute is 72 bytes");
static_assert(sizeof(LaunchConfig) == 56, "CUlaunchConfig is 56 bytes");

using LaunchFn = int (*)(const LaunchConfig*, void*, void**, void**);  // cuLaunchKernelEx
using ErrorNameFn = int (*)(int, const char**);                         // cuGetErrorName

constexpr int kInvalidContext = 201;             // CUDA_ERROR_INVALID_CONTEXT
constexpr int kProgrammaticSerialization = 6;    // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
constexpr size_t kMaxSlots = 128;                // the scan's kernels take 20-40

struct Launch {
  void* function;
  uint32_t grid[3];
  uint32_t block;
  uint32_t shared;
  bool pdl;
  int64_t allocs;                                 // the pass's buffers allocated before it launches
  std::vector<uint64_t> slots;                    // 8 bytes a parameter, tensors' slots 0
  std::vector<std::pair<int64_t, int64_t>> refs;  // (slot, table place) of each tensor
};

struct Buffer {
  std::vector<int64_t> shape;
  int64_t like;  // the table place whose dtype it has; -1: float32
};

struct Pass {
  LaunchFn launch;
  ErrorNameFn error_name;  // null: errors by number
  int64_t inputs;          // table places the caller fills
  std::vector<Buffer> buffers;
  std::vector<Launch> launches;
  std::vector<int64_t> outputs;
};

// Messages are built as strings, never by streaming a number: on the lent H100 (torch 2.11's
// wheel, g++ 13) an integer streamed into c10::str's ostringstream crashed inside the stream's
// numeric formatting (reports/benchmarks/h100-host/README.md)
std::string num(int64_t v) { return std::to_string(v); }

std::mutex registry_lock;
std::deque<Pass> registry;  // a deque: a pass stays where it is while others are added

const Pass& pass_at(int64_t id) {
  std::lock_guard<std::mutex> hold(registry_lock);
  TORCH_CHECK(id >= 0 && id < static_cast<int64_t>(registry.size()), "ssmbench_host: no pass " + num(id));
  return registry[id];
}

struct Reader {
  c10::IntArrayRef blob;
  size_t at = 0;

  int64_t next() {
    TORCH_CHECK(at < blob.size(), "ssmbench_host: a pass's description ends early");
    return blob[at++];
  }

  int64_t count(int64_t most) {
    int64_t n = next();
    TORCH_CHECK(n >= 0 && n <= most, "ssmbench_host: a count of " + num(n) + " in a pass's description");
    return n;
  }
};

// A pass from torch_host.py's `encode`; its id
int64_t add_pass(c10::IntArrayRef blob) {
  Reader r{blob};
  Pass p;
  p.launch = reinterpret_cast<LaunchFn>(r.next());
  p.error_name = reinterpret_cast<ErrorNameFn>(r.next());
  TORCH_CHECK(p.launch != nullptr, "ssmbench_host: a pass needs cuLaunchKernelEx's address");
  p.inputs = r.count(64);
  for (int64_t i = 0, n = r.count(1024); i < n; ++i) {
    Buffer b;
    for (int64_t d = 0, dims = r.count(8); d < dims; ++d) b.shape.push_back(r.next());
    b.like = r.next();
    TORCH_CHECK(b.like >= -1 && b.like < p.inputs + i, "ssmbench_host: a buffer like place " + num(b.like));
    p.buffers.push_back(std::move(b));
  }
  const int64_t places = p.inputs + static_cast<int64_t>(p.buffers.size());
  for (int64_t i = 0, n = r.count(64); i < n; ++i) {
    Launch l;
    l.function = reinterpret_cast<void*>(r.next());
    for (auto& g : l.grid) g = static_cast<uint32_t>(r.next());
    l.block = static_cast<uint32_t>(r.next());
    l.shared = static_cast<uint32_t>(r.next());
    l.pdl = r.next() != 0;
    l.allocs = r.next();
    TORCH_CHECK(l.allocs >= 0 && l.allocs <= static_cast<int64_t>(p.buffers.size()), "ssmbench_host: allocs " + num(l.allocs));
    for (int64_t k = 0, slots = r.count(kMaxSlots); k < slots; ++k) l.slots.push_back(static_cast<uint64_t>(r.next()));
    for (int64_t k = 0, refs = r.count(kMaxSlots); k < refs; ++k) {
      int64_t slot = r.next(), place = r.next();
      TORCH_CHECK(slot >= 0 && slot < static_cast<int64_t>(l.slots.size()), "ssmbench_host: slot " + num(slot));
      TORCH_CHECK(place >= 0 && place < p.inputs + l.allocs, "ssmbench_host: a launch takes place " + num(place) + " before it exists");
      l.refs.emplace_back(slot, place);
    }
    p.launches.push_back(std::move(l));
  }
  for (int64_t i = 0, n = r.count(16); i < n; ++i) {
    int64_t place = r.next();
    TORCH_CHECK(place >= 0 && place < places, "ssmbench_host: output place " + num(place));
    p.outputs.push_back(place);
  }
  TORCH_CHECK(r.at == blob.size(), "ssmbench_host: a pass's description runs on");
  std::lock_guard<std::mutex> hold(registry_lock);
  registry.push_back(std::move(p));
  return static_cast<int64_t>(registry.size()) - 1;
}

std::string describe(const Pass& p, int status) {
  const char* name = nullptr;
  if (p.error_name != nullptr && p.error_name(status, &name) == 0 && name != nullptr)
    return std::string(name) + " (" + std::to_string(status) + ")";
  return "CUDA error " + std::to_string(status);
}

// A thread with no current context (autograd's device thread can start without one): the
// device's primary context, the one the CUDA runtime (and so torch and Triton) uses
bool make_current(const c10::Device& device) {
  static void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) return false;
  using GetFn = int (*)(int*, int);
  using RetainFn = int (*)(void**, int);
  using SetFn = int (*)(void*);
  auto get = reinterpret_cast<GetFn>(dlsym(lib, "cuDeviceGet"));
  auto retain = reinterpret_cast<RetainFn>(dlsym(lib, "cuDevicePrimaryCtxRetain"));
  auto set = reinterpret_cast<SetFn>(dlsym(lib, "cuCtxSetCurrent"));
  int dev = 0;
  void* context = nullptr;
  return get && retain && set && get(&dev, device.index()) == 0 && retain(&context, dev) == 0 && set(context) == 0;
}

// The pass on `table` (its inputs first): the table with the buffers after
std::vector<at::Tensor> run(const Pass& p, std::vector<at::Tensor> table) {
  TORCH_CHECK(static_cast<int64_t>(table.size()) == p.inputs, "ssmbench_host: a pass of " + num(p.inputs) + " inputs given " + num(table.size()));
  const c10::Device device = table[0].device();
  c10::OptionalDeviceGuard guard;
  void* stream = nullptr;  // a CPU table (the tests' fake launches): none
  if (device.is_cuda()) {
    guard.reset_device(device);
    stream = c10::impl::VirtualGuardImpl(device.type()).getStream(device).native_handle();
  }
  const auto options = at::TensorOptions().device(device);
  auto allocate = [&](size_t upto) {
    while (table.size() - p.inputs < upto) {
      const Buffer& b = p.buffers[table.size() - p.inputs];
      table.push_back(at::empty(b.shape, options.dtype(b.like < 0 ? at::kFloat : table[b.like].scalar_type())));
    }
  };
  LaunchAttribute attr{};
  attr.id = kProgrammaticSerialization;
  attr.value = 1;
  uint64_t slots[kMaxSlots];
  void* params[kMaxSlots];
  for (size_t k = 0; k < kMaxSlots; ++k) params[k] = &slots[k];
  for (const Launch& l : p.launches) {
    allocate(l.allocs);
    if (l.grid[0] == 0 || l.grid[1] == 0 || l.grid[2] == 0) continue;  // as Triton's launcher: nothing to run
    std::memcpy(slots, l.slots.data(), l.slots.size() * sizeof(uint64_t));
    for (const auto& [slot, place] : l.refs) slots[slot] = reinterpret_cast<uint64_t>(table[place].data_ptr());
    LaunchConfig config{{l.grid[0], l.grid[1], l.grid[2]}, {l.block, 1, 1}, l.shared, stream, l.pdl ? &attr : nullptr, l.pdl ? 1u : 0u};
    int status = p.launch(&config, l.function, params, nullptr);
    if (status == kInvalidContext && make_current(device)) status = p.launch(&config, l.function, params, nullptr);
    TORCH_CHECK(status == 0, "ssmbench_host: cuLaunchKernelEx failed: " + describe(p, status));
  }
  allocate(p.buffers.size());
  return table;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// selective_scan with autograd: the forward pass keeps the segments' start states, which the
// backward pass (the recompute, the adjoint carries, the gradients) starts from
struct ScanFunction : public torch::autograd::Function<ScanFunction> {
  static variable_list forward(AutogradContext* ctx, int64_t forward_pass, int64_t backward_pass, const at::Tensor& x,
                               const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                               const at::Tensor& D, const at::Tensor& z, const at::Tensor& dt_bias) {
    const Pass& p = pass_at(forward_pass);
    auto t = run(p, {x, dt, A, B, C, D, z, dt_bias, at::Tensor(), at::Tensor()});
    at::Tensor out = t[p.outputs[0]], last = t[p.outputs[1]].transpose(1, 2);
    ctx->save_for_backward({x, dt, A, B, C, D, z, dt_bias, t[p.outputs[2]]});
    ctx->saved_data["backward_pass"] = backward_pass;
    ctx->mark_non_differentiable({last});
    ctx->set_materialize_grads(false);  // no zeros for the last state's gradient (it has none)
    return {out, last};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(10);  // the two pass ids, then the inputs
    at::Tensor dout = grads[0];
    if (!dout.defined()) return result;
    auto table = ctx->get_saved_variables();
    // the backward pass was planned for a contiguous dout in out's dtype, 16-byte aligned
    dout = dout.to(table[0].scalar_type()).contiguous();
    if (reinterpret_cast<uintptr_t>(dout.data_ptr()) & 15) dout = dout.clone();
    table.push_back(dout);
    const Pass& p = pass_at(ctx->saved_data["backward_pass"].toInt());
    auto t = run(p, std::move(table));
    for (size_t i = 0; i < 8; ++i) result[2 + i] = t[p.outputs[i]];
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> scan(int64_t forward_pass, int64_t backward_pass, const at::Tensor& x, const at::Tensor& dt,
                                        const at::Tensor& A, const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                        const at::Tensor& z, const at::Tensor& dt_bias) {
  if (backward_pass >= 0) {
    auto r = ScanFunction::apply(forward_pass, backward_pass, x, dt, A, B, C, D, z, dt_bias);
    return {r[0], r[1]};
  }
  const Pass& p = pass_at(forward_pass);
  auto t = run(p, {x, dt, A, B, C, D, z, dt_bias, at::Tensor(), at::Tensor()});
  return {t[p.outputs[0]], t[p.outputs[1]].transpose(1, 2)};
}

// Any pass on a table of optional tensors (tests): the whole table after the run
std::vector<at::Tensor> run_pass(int64_t id, const std::vector<std::optional<at::Tensor>>& given) {
  std::vector<at::Tensor> table;
  for (const auto& t : given) table.push_back(t.has_value() ? *t : at::Tensor());
  return run(pass_at(id), std::move(table));
}

}  // namespace

TORCH_LIBRARY(ssmbench_host, m) {
  m.def("add_pass(int[] blob) -> int", add_pass);
  m.def("scan(int forward_pass, int backward_pass, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor D, Tensor z, "
        "Tensor dt_bias) -> (Tensor, Tensor)",
        scan);
  m.def("run(int pass_id, Tensor?[] table) -> Tensor[]", run_pass);
}
