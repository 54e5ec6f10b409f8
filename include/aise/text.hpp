#pragma once
/// @file
/// Text models for agents, built from aise::ml parts: a `text_encoder`
/// (WordPiece tokenizer + a model + mean pooling → one embedding per text)
/// and a `text_classifier` (an encoder, optionally a head model, softmax →
/// a label and the scores of every label). Any `ml::model` works: a
/// TorchScript file through aise::torch, a batched model, another backend.
///
/// What the model must look like: it takes `input_ids` and `attention_mask`
/// (and `token_type_ids` when `text_options::token_type_ids` is set), each
/// int64 [texts, tokens], and its first output is either token states
/// float32 [texts, tokens, width] (mean-pooled over the real tokens here) or
/// one vector per text float32 [texts, width] (used as it is).
///
/// Contract: both classes are immutable after construction; every member is
/// const and may be called from any thread at once (they call the model's
/// `run`, which is thread-safe). Errors are values: invalid UTF-8 and bad
/// model outputs are `invalid_argument`; the model's own errors pass
/// through with the text's index added.

#include <aise/error.hpp>
#include <aise/ml.hpp>
#include <aise/ml_export.hpp>
#include <aise/wordpiece.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aise::ml {

/// How texts are turned into model inputs.
struct AISE_ML_EXPORT text_options {
  /// Tokens per text at most, [CLS] and [SEP] included (longer texts are
  /// truncated); a batch is padded to its longest text.
  std::size_t max_length = 128;
  /// Pass token_type_ids as a third input (BERT-style models exported with it).
  bool token_type_ids = false;
};

class AISE_ML_EXPORT text_encoder {
 public:
  /// `invalid_argument` when the tokenizer or model is null or max_length < 2.
  static result<text_encoder> make(std::shared_ptr<const wordpiece_tokenizer> tokenizer,
                                   std::shared_ptr<model> encoder, text_options options = {});

  /// One embedding per text: float32 [texts.size(), width].
  [[nodiscard]] result<tensor> embed(std::span<const std::string> texts) const;
  /// The embedding of one text.
  [[nodiscard]] result<std::vector<float>> embed(std::string_view text) const;

  [[nodiscard]] const wordpiece_tokenizer& tokenizer() const noexcept { return *tokenizer_; }
  [[nodiscard]] const std::shared_ptr<model>& encoder() const noexcept { return model_; }

 private:
  text_encoder(std::shared_ptr<const wordpiece_tokenizer> t, std::shared_ptr<model> m,
               text_options o)
      : tokenizer_(std::move(t)), model_(std::move(m)), options_(o) {}
  std::shared_ptr<const wordpiece_tokenizer> tokenizer_;
  std::shared_ptr<model> model_;
  text_options options_;
};

/// A classified text.
struct AISE_ML_EXPORT prediction {
  std::string label;          ///< The most probable label.
  std::size_t index = 0;      ///< Its position in the label list.
  std::vector<float> scores;  ///< Probabilities of every label (softmax), in label order.
};

class AISE_ML_EXPORT text_classifier {
 public:
  /// `encoder` gives one vector per text; `head` (may be null) maps it to
  /// logits (float32 [texts, labels]); without a head the encoder's vectors
  /// are the logits. `labels` empty: taken from the metadata key "labels"
  /// of the head (else of the encoder's model). `invalid_argument` when no
  /// labels are found.
  static result<text_classifier> make(text_encoder encoder, std::shared_ptr<model> head = nullptr,
                                      std::vector<std::string> labels = {});

  /// One prediction per text. `invalid_argument` when the logits' width is
  /// not the number of labels.
  [[nodiscard]] result<std::vector<prediction>> classify(std::span<const std::string> texts) const;
  [[nodiscard]] result<prediction> classify(std::string_view text) const;

  [[nodiscard]] const std::vector<std::string>& labels() const noexcept { return labels_; }

 private:
  text_classifier(text_encoder e, std::shared_ptr<model> h, std::vector<std::string> l)
      : encoder_(std::move(e)), head_(std::move(h)), labels_(std::move(l)) {}
  text_encoder encoder_;
  std::shared_ptr<model> head_;
  std::vector<std::string> labels_;
};

}  // namespace aise::ml
