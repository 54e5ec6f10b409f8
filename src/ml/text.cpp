// Text encoder and classifier (include/aise/text.hpp).
#include <aise/text.hpp>

#include <algorithm>
#include <fmt/format.h>

namespace aise::ml {

result<text_encoder> text_encoder::make(std::shared_ptr<const wordpiece_tokenizer> tokenizer,
                                        std::shared_ptr<model> encoder, text_options options) {
  if (!tokenizer || !encoder)
    return error(errc::invalid_argument, "text_encoder: a tokenizer and a model are required");
  if (options.max_length < 2)
    return error(errc::invalid_argument, "text_encoder: max_length must be >= 2");
  return text_encoder(std::move(tokenizer), std::move(encoder), options);
}

result<tensor> text_encoder::embed(std::span<const std::string> texts) const {
  auto inputs = tokenizer_->encode_batch(texts, options_.max_length);
  if (!inputs) return inputs.error();
  tensors args{(*inputs)[0], (*inputs)[1]};
  if (options_.token_type_ids) args.push_back((*inputs)[2]);
  auto out = model_->run(args);
  if (!out) return out.error();
  if (out->empty())
    return error(errc::invalid_argument,
                 fmt::format("text_encoder: model '{}' returned nothing", model_->info().name));
  const tensor& first = out->front();
  const auto n = static_cast<std::int64_t>(texts.size());
  if (first.type() == dtype::float32 && first.shape().size() == 3 && first.shape()[0] == n &&
      first.shape()[1] == (*inputs)[1].shape()[1]) {
    return mean_pool(first, (*inputs)[1]);
  }
  if (first.type() == dtype::float32 && first.shape().size() == 2 && first.shape()[0] == n) {
    return first;
  }
  return error(errc::invalid_argument,
               fmt::format("text_encoder: model '{}' returned {}; expected float32 [{}, tokens, "
                           "width] or [{}, width]",
                           model_->info().name, first.describe(), n, n));
}

result<std::vector<float>> text_encoder::embed(std::string_view text) const {
  std::vector<std::string> one{std::string(text)};
  auto e = embed(one);
  if (!e) return e.error();
  return std::vector<float>(e->floats().begin(), e->floats().end());
}

result<text_classifier> text_classifier::make(text_encoder encoder, std::shared_ptr<model> head,
                                              std::vector<std::string> labels) {
  if (labels.empty()) {
    for (const model* m : {head.get(), encoder.encoder().get()}) {
      if (m == nullptr) continue;
      const auto& meta = m->info().metadata;
      if (meta.is_object() && meta.contains("labels") && meta.at("labels").is_array()) {
        for (const auto& l : meta.at("labels")) {
          if (!l.is_string())
            return error(
                errc::invalid_argument,
                fmt::format("text_classifier: model '{}': labels must be strings", m->info().name));
          labels.push_back(l.get<std::string>());
        }
        break;
      }
    }
  }
  if (labels.empty())
    return error(errc::invalid_argument,
                 "text_classifier: no labels given and no model has metadata \"labels\"");
  return text_classifier(std::move(encoder), std::move(head), std::move(labels));
}

result<std::vector<prediction>> text_classifier::classify(
    std::span<const std::string> texts) const {
  auto emb = encoder_.embed(texts);
  if (!emb) return emb.error();
  tensor logits = std::move(*emb);
  if (head_) {
    auto out = head_->run({logits});
    if (!out) return out.error();
    if (out->empty())
      return error(errc::invalid_argument, "text_classifier: the head returned nothing");
    logits = std::move(out->front());
  }
  if (logits.type() != dtype::float32 || logits.shape().size() != 2 ||
      logits.shape()[0] != static_cast<std::int64_t>(texts.size()) ||
      logits.shape()[1] != static_cast<std::int64_t>(labels_.size()))
    return error(
        errc::invalid_argument,
        fmt::format("text_classifier: logits are {}, expected float32 [{}, {}] for "
                    "{} texts and {} labels",
                    logits.describe(), texts.size(), labels_.size(), texts.size(), labels_.size()));
  auto p = softmax(logits);
  if (!p) return p.error();
  std::vector<prediction> out;
  const std::size_t width = labels_.size();
  for (std::size_t r = 0; r < texts.size(); ++r) {
    prediction pr;
    pr.scores.assign(p->floats().begin() + static_cast<std::ptrdiff_t>(r * width),
                     p->floats().begin() + static_cast<std::ptrdiff_t>((r + 1) * width));
    pr.index = static_cast<std::size_t>(std::max_element(pr.scores.begin(), pr.scores.end()) -
                                        pr.scores.begin());
    pr.label = labels_[pr.index];
    out.push_back(std::move(pr));
  }
  return out;
}

result<prediction> text_classifier::classify(std::string_view text) const {
  std::vector<std::string> one{std::string(text)};
  auto all = classify(one);
  if (!all) return all.error();
  return std::move(all->front());
}

}  // namespace aise::ml
