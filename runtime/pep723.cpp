// PEP 723 inline script metadata and the PEP 440 check of its requires-python.
#include <algorithm>
#include <climits>
#include <limits>
#include <optional>

#include <toml++/toml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/spec.h"

namespace iu {
namespace {

// `^# /// (?P<type>[a-zA-Z0-9-]+)$`
bool IsBlockStart(absl::string_view line, std::string* type) {
  if (!absl::ConsumePrefix(&line, "# /// ") || line.empty()) return false;
  for (char c : line) {
    if (!absl::ascii_isalnum(c) && c != '-') return false;
  }
  *type = std::string(line);
  return true;
}

// `^#(| .*)$`
bool IsCommentLine(absl::string_view line) { return line == "#" || absl::StartsWith(line, "# "); }

struct Block {
  std::string type;
  std::string content;
  size_t line = 0;  // 1-based line of the opening `# /// TYPE`
};

// The blocks the reference regex of PEP 723 finds:
//   (?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$
// The content is greedy: a block closes at the last `# ///` of its run of comment lines.
std::vector<Block> FindBlocks(const std::string& text) {
  // Universal newlines, as Python's text mode reads the script.
  std::string normalized = absl::StrReplaceAll(text, {{"\r\n", "\n"}});
  std::replace(normalized.begin(), normalized.end(), '\r', '\n');
  std::vector<absl::string_view> lines = absl::StrSplit(normalized, '\n');
  // A line "has a newline" unless it is the last piece of the split.
  const size_t count = lines.size();
  std::vector<Block> blocks;
  size_t i = 0;
  while (i < count) {
    std::string type;
    if (i + 1 >= count || !IsBlockStart(lines[i], &type)) {
      ++i;
      continue;
    }
    // The run of comment lines after the opening line.
    size_t run_end = i + 1;  // one past the last comment line
    while (run_end < count && IsCommentLine(lines[run_end])) ++run_end;
    // The closing line: the last `# ///` at index >= i+2 inside the run (content lines before it
    // all end with a newline, since a line follows them).
    std::optional<size_t> close;
    for (size_t k = run_end; k-- > i + 2;) {
      if (lines[k] == "# ///") {
        close = k;
        break;
      }
    }
    if (!close) {
      ++i;
      continue;
    }
    Block block;
    block.type = type;
    block.line = i + 1;
    for (size_t k = i + 1; k < *close; ++k) {
      absl::string_view line = lines[k];
      line.remove_prefix(absl::StartsWith(line, "# ") ? 2 : 1);
      absl::StrAppend(&block.content, line, "\n");
    }
    blocks.push_back(std::move(block));
    i = *close + 1;
  }
  return blocks;
}

// --- PEP 440 versions, enough for requires-python -------------------------------------------------

struct Version {
  long epoch = 0;
  std::vector<long> release;
  int pre_kind = -1;  // -1 none, 0 a, 1 b, 2 rc
  long pre = 0;
  bool has_post = false;
  long post = 0;
  bool has_dev = false;
  long dev = 0;
};

bool ReadNumber(absl::string_view* s, long* out) {
  size_t n = 0;
  while (n < s->size() && absl::ascii_isdigit((*s)[n])) ++n;
  if (n == 0) return false;
  // Digits only, so the one failure is overflow: PEP 440 puts no bound on a number, and one
  // beyond a long is larger than any version it is compared with (3.99999999999999999999).
  if (!absl::SimpleAtoi(s->substr(0, n), out)) *out = std::numeric_limits<long>::max();
  s->remove_prefix(n);
  return true;
}

void SkipSeparator(absl::string_view* s) {
  if (!s->empty() && ((*s)[0] == '.' || (*s)[0] == '-' || (*s)[0] == '_')) s->remove_prefix(1);
}

// Parses a PEP 440 version (local part ignored). `wildcard` receives whether it ends in ".*".
std::optional<Version> ParseVersion(absl::string_view text, bool allow_wildcard, bool* wildcard) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  absl::string_view s = lower;
  if (wildcard) *wildcard = false;
  absl::ConsumePrefix(&s, "v");
  Version v;
  if (size_t bang = s.find('!'); bang != absl::string_view::npos) {
    if (!absl::SimpleAtoi(s.substr(0, bang), &v.epoch)) return std::nullopt;
    s.remove_prefix(bang + 1);
  }
  long number = 0;
  if (!ReadNumber(&s, &number)) return std::nullopt;
  v.release.push_back(number);
  while (absl::StartsWith(s, ".") && s.size() > 1 && absl::ascii_isdigit(s[1])) {
    s.remove_prefix(1);
    ReadNumber(&s, &number);
    v.release.push_back(number);
  }
  if (allow_wildcard && s == ".*") {
    if (wildcard) *wildcard = true;
    return v;
  }
  // Pre-release.
  {
    absl::string_view t = s;
    SkipSeparator(&t);
    static const std::pair<const char*, int> kPre[] = {{"alpha", 0}, {"a", 0},    {"beta", 1}, {"b", 1},
                                                       {"preview", 2}, {"pre", 2}, {"rc", 2},   {"c", 2}};
    for (const auto& [word, kind] : kPre) {
      if (absl::ConsumePrefix(&t, word)) {
        v.pre_kind = kind;
        SkipSeparator(&t);
        ReadNumber(&t, &v.pre);
        s = t;
        break;
      }
    }
  }
  // Post-release.
  {
    absl::string_view t = s;
    if (absl::StartsWith(t, "-") && t.size() > 1 && absl::ascii_isdigit(t[1])) {
      t.remove_prefix(1);
      ReadNumber(&t, &v.post);
      v.has_post = true;
      s = t;
    } else {
      SkipSeparator(&t);
      for (const char* word : {"post", "rev", "r"}) {
        if (absl::ConsumePrefix(&t, word)) {
          v.has_post = true;
          SkipSeparator(&t);
          ReadNumber(&t, &v.post);
          s = t;
          break;
        }
      }
    }
  }
  // Development release.
  {
    absl::string_view t = s;
    SkipSeparator(&t);
    if (absl::ConsumePrefix(&t, "dev")) {
      v.has_dev = true;
      SkipSeparator(&t);
      ReadNumber(&t, &v.dev);
      s = t;
    }
  }
  if (absl::StartsWith(s, "+")) s = {};  // local version label: ignored
  if (!s.empty()) return std::nullopt;
  return v;
}

int CompareLong(long a, long b) { return a < b ? -1 : (a > b ? 1 : 0); }

int Compare(const Version& a, const Version& b) {
  if (int c = CompareLong(a.epoch, b.epoch)) return c;
  size_t n = std::max(a.release.size(), b.release.size());
  for (size_t i = 0; i < n; ++i) {
    long x = i < a.release.size() ? a.release[i] : 0;
    long y = i < b.release.size() ? b.release[i] : 0;
    if (int c = CompareLong(x, y)) return c;
  }
  // Pre-release: a dev release of a final sorts before its pre-releases; a final after them.
  auto pre_key = [](const Version& v) -> std::pair<long, long> {
    if (v.pre_kind >= 0) return {v.pre_kind, v.pre};
    if (v.has_dev && !v.has_post) return {-1, 0};
    return {3, 0};
  };
  if (auto pa = pre_key(a), pb = pre_key(b); pa != pb) return pa < pb ? -1 : 1;
  long post_a = a.has_post ? a.post : -1, post_b = b.has_post ? b.post : -1;
  if (int c = CompareLong(post_a, post_b)) return c;
  long dev_a = a.has_dev ? a.dev : LONG_MAX, dev_b = b.has_dev ? b.dev : LONG_MAX;
  return CompareLong(dev_a, dev_b);
}

bool PrefixMatch(const Version& candidate, const std::vector<long>& prefix, long epoch) {
  if (candidate.epoch != epoch) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    long x = i < candidate.release.size() ? candidate.release[i] : 0;
    if (x != prefix[i]) return false;
  }
  return true;
}

// One clause ("<op><version>") against the candidate. nullopt: the clause is invalid.
std::optional<bool> Satisfies(absl::string_view clause, const Version& candidate,
                              absl::string_view candidate_text) {
  size_t op_end = 0;
  while (op_end < clause.size() && absl::StrContains("<>=!~", clause[op_end])) ++op_end;
  absl::string_view op = clause.substr(0, op_end);
  absl::string_view text = absl::StripAsciiWhitespace(clause.substr(op_end));
  if (text.empty()) return std::nullopt;
  if (op == "===") return text == candidate_text;
  bool wildcard = false;
  std::optional<Version> v = ParseVersion(text, op == "==" || op == "!=", &wildcard);
  if (!v) return std::nullopt;
  if (op == "==" || op == "!=") {
    bool equal = wildcard ? PrefixMatch(candidate, v->release, v->epoch) : Compare(candidate, *v) == 0;
    return op == "==" ? equal : !equal;
  }
  int c = Compare(candidate, *v);
  if (op == ">=") return c >= 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  if (op == "<") return c < 0;
  if (op == "~=") {
    if (v->release.size() < 2) return std::nullopt;
    std::vector<long> prefix(v->release.begin(), v->release.end() - 1);
    return c >= 0 && PrefixMatch(candidate, prefix, v->epoch);
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<ScriptMetadata> ParsePep723(const std::string& script_text, const std::string& path) {
  ScriptMetadata metadata;
  metadata.path = path;
  const Block* script = nullptr;
  std::vector<Block> blocks = FindBlocks(script_text);
  for (const Block& block : blocks) {
    if (block.type != "script") continue;
    if (script) {
      return ConfigError(absl::StrCat(path, ":", block.line,
                                      ": a second `# /// script` metadata block (the first is at line ",
                                      script->line, "); PEP 723 allows one, merge them"));
    }
    script = &block;
  }
  if (!script) return metadata;
  metadata.present = true;

  toml::table table;
  try {
    table = toml::parse(script->content, path);
  } catch (const toml::parse_error& error) {
    return ConfigError(absl::StrCat(path, ":", script->line + error.source().begin.line, ": invalid TOML in the ",
                                    "`# /// script` metadata block (PEP 723): ", std::string(error.description())));
  }
  auto error = [&](const toml::node& node, absl::string_view what) {
    return ConfigError(absl::StrCat(path, ":", script->line + node.source().begin.line,
                                    ": in the `# /// script` metadata block (PEP 723), ", what));
  };
  for (auto&& [name, node] : table) {
    std::string key(name.str());
    if (key == "dependencies") {
      const auto* array = node.as_array();
      if (!array) return error(node, "'dependencies' must be an array of strings");
      for (const toml::node& item : *array) {
        const auto* text = item.as_string();
        if (!text) return error(item, "'dependencies' must be an array of strings");
        metadata.dependencies.push_back(text->get());
        if (auto status = CheckRequirement(text->get(), absl::StrCat(path, ": PEP 723 dependencies"));
            !status.ok()) {
          return status;
        }
      }
    } else if (key == "requires-python") {
      const auto* text = node.as_string();
      if (!text) return error(node, "'requires-python' must be a string such as \">=3.10\"");
      metadata.requires_python = text->get();
    }
    // [tool] and future keys are not ours to judge.
  }
  return metadata;
}

absl::Status CheckRequiresPython(const std::string& specifier, const std::string& python_version,
                                 const std::string& path) {
  if (absl::StripAsciiWhitespace(specifier).empty()) return absl::OkStatus();
  std::optional<Version> candidate = ParseVersion(python_version, false, nullptr);
  if (!candidate) {
    return WithExit(absl::InternalError(absl::StrCat("cannot read the embedded Python's version '",
                                                     python_version, "'")),
                    kExitInternal);
  }
  bool satisfied = true;
  for (absl::string_view clause : absl::StrSplit(specifier, ',')) {
    clause = absl::StripAsciiWhitespace(clause);
    std::optional<bool> ok = Satisfies(clause, *candidate, python_version);
    if (!ok) {
      return ConfigError(absl::StrCat(path, ": requires-python '", specifier, "' is not a valid PEP 440 ",
                                      "version specifier ('", clause, "'); write it like \">=3.10,<3.13\""));
    }
    satisfied = satisfied && *ok;
  }
  if (satisfied) return absl::OkStatus();
  return WithExit(absl::FailedPreconditionError(absl::StrCat(
                      path, " requires Python ", specifier, " (requires-python), but the embedded ",
                      "interpreter is Python ", python_version,
                      "; change requires-python or run the script with a matching Python")),
                  kExitUnavailable);
}

}  // namespace iu
