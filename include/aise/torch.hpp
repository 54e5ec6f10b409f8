#pragma once
/// @file
/// aise::torch: the LibTorch backend of aise::ml (include/aise/ml.hpp). It
/// loads TorchScript files (`torch.jit.save`, or `torch::jit::Module::save`
/// in C++) and runs their `forward` method; no LibTorch type appears in this
/// header, so code written against `ml::model` does not depend on LibTorch.
///
/// Contract (beyond ml::backend's):
/// - Inputs are passed to `forward` as positional tensors (float32 or
///   int64, copied into LibTorch tensors on the model's device); the result
///   may be a tensor or a tuple/list of tensors (flattened in order); other
///   result types are `invalid_argument`. Outputs are copied back to the CPU
///   as float32 (floating types) or int64 (integer and bool types).
/// - Inference runs without autograd (`c10::InferenceMode`); the module is
///   in eval mode. `run` may be called from many threads at once.
/// - Metadata: the extra file "aise.json" stored in the model archive, when
///   present and valid JSON, becomes `model_info::metadata` (an invalid one
///   fails the load with `invalid_argument`).
/// - LibTorch's exceptions never escape: they become errors whose message
///   is the first line of LibTorch's.
/// - TorchScript is deprecated upstream; this backend is one implementation
///   of `ml::backend`, so another format is another backend.

#include <aise/error.hpp>
#include <aise/ml.hpp>
#include <aise/torch_export.hpp>

#include <memory>
#include <string>

namespace aise::torch {

/// Options of the TorchScript backend.
struct AISE_TORCH_EXPORT torchscript_options {
  /// LibTorch's intra-op threads for the whole process (it is a process
  /// setting); 0 leaves LibTorch's default (one per core).
  int intra_op_threads = 0;
};

/// The TorchScript backend. Thread-safe; keeps no models itself.
AISE_TORCH_EXPORT std::shared_ptr<ml::backend> make_torchscript_backend(
    torchscript_options options = {});

/// True when LibTorch sees a CUDA device.
AISE_TORCH_EXPORT bool cuda_available() noexcept;

/// LibTorch's version, e.g. "1.13.1".
AISE_TORCH_EXPORT std::string version();

}  // namespace aise::torch
