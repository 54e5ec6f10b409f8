// The triage example: an agent classifies incoming issue reports with a
// model and hands each to the agent for its kind of work.
//
// The model is trained when the program starts, from a small labelled set
// (TF-IDF + logistic regression from aise::torch's classic ML, in the role
// scikit-learn plays in Python). The triager runs "triage" tasks: it
// predicts bug / feature / question and spawns a subtask of that kind,
// which the fixer, the planner or the helper agent takes.
//
//   aise_triage_example ["an issue text" ...]
#include <aise/classic_ml.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/task_context.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace {

struct labelled {
  const char* text;
  int label;  // index into labels
};

const std::vector<std::string> labels{"bug", "feature", "question"};
const labelled training[] = {
    {"crash when saving a file with unicode name", 0},
    {"segfault on startup after update", 0},
    {"error 500 when the session expires", 0},
    {"the build fails with a null pointer exception", 0},
    {"wrong total shown after refund, calculation is broken", 0},
    {"login button does nothing, regression since 2.1", 0},
    {"add dark mode to the settings page", 1},
    {"support exporting reports as csv", 1},
    {"please add an option to configure the timeout", 1},
    {"new api endpoint to list archived projects", 1},
    {"allow users to invite team members by email", 1},
    {"feature request: keyboard shortcuts for navigation", 1},
    {"how do I configure the proxy settings?", 2},
    {"what is the difference between projects and workspaces?", 2},
    {"is there a way to run it without docker?", 2},
    {"where can I find the logs?", 2},
    {"how to upgrade from version 1 to version 2?", 2},
    {"which databases are supported?", 2},
};

/// Shared by every triager: the fitted vectorizer and classifier.
struct triage_model {
  aise::ml::tfidf_vectorizer vectorizer;
  aise::ml::logistic_regression classifier{{.c = 10.0}};
};

std::shared_ptr<const triage_model> train() {
  auto m = std::make_shared<triage_model>();
  std::vector<std::string> docs;
  std::vector<std::int64_t> ys;
  for (const auto& t : training) {
    docs.emplace_back(t.text);
    ys.push_back(t.label);
  }
  auto x = m->vectorizer.fit_transform(docs);
  const auto n = static_cast<std::int64_t>(ys.size());
  auto y = aise::ml::tensor::of({n}, std::move(ys));
  if (!x || !y || !m->classifier.fit(*x, *y)) {
    std::fprintf(stderr, "training failed\n");
    std::exit(1);
  }
  return m;
}

class triager : public aise::agent {
 public:
  explicit triager(std::shared_ptr<const triage_model> m) : model_(std::move(m)) {
    on_task("triage", [this](aise::task_context& ctx) -> aise::result<nlohmann::json> {
      const std::string text = ctx.payload().at("text");
      auto x = model_->vectorizer.transform(std::vector<std::string>{text});
      if (!x) return x.error();
      auto p = model_->classifier.predict_proba(*x);
      if (!p) return p.error();
      std::size_t best = 0;
      for (std::size_t i = 1; i < labels.size(); ++i)
        if (p->floats()[i] > p->floats()[best]) best = i;
      const std::string kind = "handle_" + labels[best];
      auto sub = ctx.spawn({.kind = kind, .description = text, .payload = {{"text", text}}});
      if (!sub) return sub.error();
      return nlohmann::json{
          {"label", labels[best]}, {"confidence", p->floats()[best]}, {"handed_to", *sub}};
    });
  }

 private:
  std::shared_ptr<const triage_model> model_;
};

/// The agents that do the work (here: they say what they would do).
class worker : public aise::agent {
 public:
  worker(std::string kind, std::string what) {
    on_task(kind,
            [what = std::move(what)](aise::task_context& ctx) -> aise::result<nlohmann::json> {
              return what + ": " + ctx.payload().at("text").get<std::string>();
            });
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> issues;
  for (int i = 1; i < argc; ++i) issues.emplace_back(argv[i]);
  if (issues.empty()) {
    issues = {"app crashes when I upload a large file", "add support for two-factor login",
              "how do I change my password?", "exception in the export job after upgrade"};
  }
  auto model = train();
  aise::runtime rt;
  aise::orchestrator orch(rt);
  (void)orch.register_kind("triager", [model] { return std::make_unique<triager>(model); });
  (void)orch.register_kind(
      "fixer", [] { return std::make_unique<worker>("handle_bug", "reproduce and fix"); });
  (void)orch.register_kind(
      "planner", [] { return std::make_unique<worker>("handle_feature", "write a design"); });
  (void)orch.register_kind("helper",
                           [] { return std::make_unique<worker>("handle_question", "answer"); });
  for (const char* kind : {"triager", "fixer", "planner", "helper"}) {
    if (auto r = orch.spawn({.kind = kind}); !r) {
      std::fprintf(stderr, "spawn %s: %s\n", kind, r.error().describe().c_str());
      return 1;
    }
  }
  int failures = 0;
  for (const auto& text : issues) {
    auto id = orch.submit({.kind = "triage", .payload = {{"text", text}}});
    auto done =
        id ? orch.wait(*id, std::chrono::seconds(30)) : aise::result<aise::task>(id.error());
    if (!done || done->state != aise::task_state::succeeded) {
      std::printf("%-45s -> failed\n", text.c_str());
      ++failures;
      continue;
    }
    const auto& r = *done->result;
    auto handled = orch.wait(r.at("handed_to").get<std::string>(), std::chrono::seconds(30));
    std::printf("%-45s -> %-8s (p=%.2f) -> %s\n", text.c_str(),
                r.at("label").get<std::string>().c_str(), r.at("confidence").get<double>(),
                handled && handled->result ? handled->result->get<std::string>().c_str() : "?");
  }
  (void)rt.shutdown();
  return failures == 0 ? 0 : 1;
}
