// The TorchScript backend of aise::ml (include/aise/torch.hpp). The only
// translation unit of aise::torch that includes LibTorch (it takes ~20 s to
// compile): keep it that way.
#include <aise/torch.hpp>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <filesystem>
#include <fmt/format.h>
#include <mutex>
#include <sstream>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

namespace aise::torch {
namespace {

/// LibTorch's message up to its first line break (the rest is a C++ stack
/// or the TorchScript source around the error).
std::string first_line(const char* what) {
  std::string s = what != nullptr ? what : "";
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

result<::torch::Tensor> to_torch(const ml::tensor& t, const c10::Device& device) {
  std::vector<std::int64_t> shape(t.shape().begin(), t.shape().end());
  ::torch::Tensor cpu;
  if (t.type() == ml::dtype::float32) {
    cpu = ::torch::empty(shape, ::torch::kFloat32);
    std::copy(t.floats().begin(), t.floats().end(), cpu.data_ptr<float>());
  } else {
    cpu = ::torch::empty(shape, ::torch::kInt64);
    std::copy(t.ints().begin(), t.ints().end(), cpu.data_ptr<std::int64_t>());
  }
  return device.is_cpu() ? cpu : cpu.to(device);
}

result<ml::tensor> from_torch(const ::torch::Tensor& out) {
  ::torch::Tensor t = out.detach();
  if (!t.device().is_cpu()) t = t.to(::torch::kCPU);
  std::vector<std::int64_t> shape(t.sizes().begin(), t.sizes().end());
  if (t.is_floating_point()) {
    t = t.to(::torch::kFloat32).contiguous();
    const float* p = t.data_ptr<float>();
    return ml::tensor::of(std::move(shape), std::vector<float>(p, p + t.numel()));
  }
  if (t.is_complex()) {
    return error(errc::invalid_argument, "torchscript: complex outputs are not supported");
  }
  t = t.to(::torch::kInt64).contiguous();
  const std::int64_t* p = t.data_ptr<std::int64_t>();
  return ml::tensor::of(std::move(shape), std::vector<std::int64_t>(p, p + t.numel()));
}

result<void> flatten(const c10::IValue& v, ml::tensors& out) {
  if (v.isTensor()) {
    auto t = from_torch(v.toTensor());
    if (!t) return t.error();
    out.push_back(std::move(*t));
    return {};
  }
  if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) {
      if (auto r = flatten(e, out); !r) return r;
    }
    return {};
  }
  if (v.isList()) {
    for (const auto& e : v.toListRef()) {
      if (auto r = flatten(e, out); !r) return r;
    }
    return {};
  }
  return error(errc::invalid_argument,
               fmt::format("torchscript: forward returned {}; only tensors, tuples and lists of "
                           "tensors are supported",
                           v.tagKind()));
}

class torchscript_model final : public ml::model {
 public:
  torchscript_model(::torch::jit::Module module, c10::Device device, ml::model_info info)
      : module_(std::move(module)), device_(device), info_(std::move(info)) {}

  [[nodiscard]] const ml::model_info& info() const noexcept override { return info_; }

  result<ml::tensors> run(const ml::tensors& inputs) override {
    try {
      c10::InferenceMode guard;
      std::vector<c10::IValue> args;
      args.reserve(inputs.size());
      for (const auto& t : inputs) {
        auto converted = to_torch(t, device_);
        if (!converted) return converted.error();
        args.emplace_back(std::move(*converted));
      }
      // Module::forward is a const call into the graph executor, which is
      // safe to run from several threads at once.
      c10::IValue result = module_.forward(std::move(args));
      ml::tensors out;
      if (auto r = flatten(result, out); !r) return r.error();
      return out;
    } catch (const c10::Error& e) {
      return error(errc::invalid_argument, fmt::format("model '{}': {}", info_.name,
                                                       first_line(e.what_without_backtrace())));
    } catch (const std::exception& e) {
      return error(errc::invalid_argument,
                   fmt::format("model '{}': {}", info_.name, first_line(e.what())));
    }
  }

 private:
  mutable ::torch::jit::Module module_;
  c10::Device device_;
  ml::model_info info_;
};

class torchscript_backend final : public ml::backend {
 public:
  explicit torchscript_backend(torchscript_options o) : options_(o) {
    if (options_.intra_op_threads > 0) {
      static std::once_flag once;
      std::call_once(once, [n = options_.intra_op_threads] { at::set_num_threads(n); });
    }
  }

  [[nodiscard]] std::string_view name() const noexcept override { return "torchscript"; }

  result<std::shared_ptr<ml::model>> load(const std::filesystem::path& file,
                                          const ml::load_options& options) override {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec)) {
      return error(errc::not_found, fmt::format("torchscript: no model file {}", file.string()));
    }
    auto device = pick_device(options.device);
    if (!device) return device.error();
    ml::model_info info;
    info.name = options.name.empty() ? file.stem().string() : options.name;
    info.backend = "torchscript";
    info.source = file.string();
    info.device = device->str();
    try {
      ::torch::jit::ExtraFilesMap extra{{"aise.json", ""}};
      ::torch::jit::Module module = ::torch::jit::load(file.string(), *device, extra);
      module.eval();
      auto forward = module.find_method("forward");
      if (!forward) {
        return error(errc::invalid_argument,
                     fmt::format("torchscript: {} has no forward method", file.string()));
      }
      std::ostringstream signature;
      signature << forward->function().getSchema();
      info.signature = signature.str();
      if (const std::string& meta = extra["aise.json"]; !meta.empty()) {
        auto parsed = nlohmann::json::parse(meta, nullptr, false);
        if (parsed.is_discarded()) {
          return error(
              errc::invalid_argument,
              fmt::format("torchscript: {}: its aise.json is not valid JSON", file.string()));
        }
        info.metadata = std::move(parsed);
      }
      auto m = std::make_shared<torchscript_model>(std::move(module), *device, std::move(info));
      for (int i = 0; i < options.warm_up_runs && !options.warm_up.empty(); ++i) {
        if (auto r = m->run(options.warm_up); !r) {
          return error(r.error().code(), fmt::format("torchscript: warm-up of {} failed: {}",
                                                     file.string(), r.error().message()));
        }
      }
      return std::shared_ptr<ml::model>(std::move(m));
    } catch (const c10::Error& e) {
      return error(errc::invalid_argument,
                   fmt::format("torchscript: {} is not a loadable TorchScript model: {}",
                               file.string(), first_line(e.what_without_backtrace())));
    } catch (const std::exception& e) {
      return error(errc::invalid_argument,
                   fmt::format("torchscript: {} is not a loadable TorchScript model: {}",
                               file.string(), first_line(e.what())));
    }
  }

 private:
  static result<c10::Device> pick_device(const std::string& wanted) {
    try {
      if (wanted.empty() || wanted == "cpu") return c10::Device(c10::kCPU);
      if (wanted == "auto") {
        return ::torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
      }
      c10::Device d(wanted);  // "cuda", "cuda:1"; throws for nonsense
      if (d.is_cuda() && !::torch::cuda::is_available()) {
        return error(errc::unavailable,
                     fmt::format("torchscript: device '{}' asked for, but LibTorch sees no CUDA "
                                 "device (use \"cpu\" or \"auto\")",
                                 wanted));
      }
      if (!d.is_cpu() && !d.is_cuda()) {
        return error(
            errc::invalid_argument,
            fmt::format("torchscript: device '{}' is not supported (cpu, cuda, auto)", wanted));
      }
      return d;
    } catch (const std::exception& e) {
      return error(errc::invalid_argument,
                   fmt::format("torchscript: device '{}': {}", wanted, first_line(e.what())));
    }
  }

  torchscript_options options_;
};

}  // namespace

std::shared_ptr<ml::backend> make_torchscript_backend(torchscript_options options) {
  return std::make_shared<torchscript_backend>(options);
}

bool cuda_available() noexcept {
  try {
    return ::torch::cuda::is_available();
  } catch (...) {
    return false;
  }
}

std::string version() {
  return TORCH_VERSION;
}

}  // namespace aise::torch
