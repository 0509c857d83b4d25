// The runtime spec: parsing (TOML), overrides, requirement normalization and the runtime key.
// PEP 723 and requires-python live in pep723.cpp.
#include "inferenceutils/spec.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/digest.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/pip_config.h"

namespace iu {
namespace {

std::string NodeTypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

// Reads typed values out of a toml table, with errors naming the key and the file.
class Reader {
 public:
  explicit Reader(std::string origin) : origin_(std::move(origin)) {}

  absl::Status Error(const toml::node& node, absl::string_view key, absl::string_view what) const {
    return ConfigError(absl::StrCat(origin_, ":", node.source().begin.line, ": '", key, "' ", what,
                                    "; see docs/spec.md for the spec format"));
  }

  absl::Status String(const toml::node& node, absl::string_view key, std::string* out) const {
    const auto* value = node.as_string();
    if (!value) return Error(node, key, absl::StrCat("must be a string, not ", NodeTypeName(node)));
    *out = value->get();
    return absl::OkStatus();
  }

  absl::Status Bool(const toml::node& node, absl::string_view key, bool* out) const {
    const auto* value = node.as_boolean();
    if (!value) return Error(node, key, absl::StrCat("must be true or false, not ", NodeTypeName(node)));
    *out = value->get();
    return absl::OkStatus();
  }

  absl::Status StringList(const toml::node& node, absl::string_view key,
                          std::vector<std::string>* out) const {
    const auto* array = node.as_array();
    if (!array) return Error(node, key, absl::StrCat("must be an array of strings, not ", NodeTypeName(node)));
    out->clear();
    for (const toml::node& item : *array) {
      const auto* value = item.as_string();
      if (!value) {
        return Error(item, key, absl::StrCat("must be an array of strings; it holds ", NodeTypeName(item)));
      }
      out->push_back(value->get());
    }
    return absl::OkStatus();
  }

  absl::Status StringMap(const toml::node& node, absl::string_view key,
                         std::map<std::string, std::string>* out) const {
    const auto* table = node.as_table();
    if (!table) return Error(node, key, absl::StrCat("must be a table of strings, not ", NodeTypeName(node)));
    out->clear();
    for (auto&& [name, value] : *table) {
      const auto* text = value.as_string();
      if (!text) {
        return Error(value, absl::StrCat(key, ".", std::string(name.str())),
                     absl::StrCat("must be a string, not ", NodeTypeName(value)));
      }
      (*out)[std::string(name.str())] = text->get();
    }
    return absl::OkStatus();
  }

  absl::Status UnknownKey(const toml::node& node, absl::string_view key,
                          absl::string_view known) const {
    return ConfigError(absl::StrCat(origin_, ":", node.source().begin.line, ": unknown key '", key,
                                    "' in the runtime spec (known here: ", known,
                                    "); see docs/spec.md"));
  }

  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
};

bool IsUrl(absl::string_view text) { return absl::StrContains(text, "://"); }

bool IsModuleName(absl::string_view name) {
  if (name.empty()) return false;
  for (absl::string_view part : absl::StrSplit(name, '.')) {
    if (part.empty() || absl::ascii_isdigit(part[0])) return false;
    for (char c : part) {
      if (!absl::ascii_isalnum(c) && c != '_') return false;
    }
  }
  return true;
}

bool IsEnvName(absl::string_view name) {
  if (name.empty() || absl::ascii_isdigit(name[0])) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_') return false;
  }
  return true;
}

absl::Status CheckEnvNames(const Reader& reader, const toml::node& node, absl::string_view key,
                           const std::map<std::string, std::string>& env) {
  for (const auto& [name, value] : env) {
    if (!IsEnvName(name)) {
      return reader.Error(node, key, absl::StrCat("holds '", name, "', which is not an environment variable name"));
    }
  }
  return absl::OkStatus();
}

void AppendUnique(std::vector<std::string>* list, const std::vector<std::string>& more) {
  for (const auto& item : more) {
    if (std::find(list->begin(), list->end(), item) == list->end()) list->push_back(item);
  }
}

void AppendRequirements(std::vector<std::string>* list, const std::vector<std::string>& more) {
  std::set<std::string> seen;
  for (const auto& item : *list) seen.insert(NormalizeRequirement(item));
  for (const auto& item : more) {
    if (seen.insert(NormalizeRequirement(item)).second) list->push_back(item);
  }
}

absl::Status ParseSources(const Reader& reader, const toml::table& table, Sources* sources,
                          const std::string& base_dir) {
  for (auto&& [name, node] : table) {
    std::string key(name.str());
    absl::Status status;
    if (key == "index_url") {
      status = reader.String(node, "sources.index_url", &sources->index_url);
    } else if (key == "extra_index_urls") {
      status = reader.StringList(node, "sources.extra_index_urls", &sources->extra_index_urls);
    } else if (key == "find_links") {
      status = reader.StringList(node, "sources.find_links", &sources->find_links);
      for (auto& link : sources->find_links) {
        if (!base_dir.empty() && !IsUrl(link) && !absl::StartsWith(link, "/")) {
          link = absl::StrCat(base_dir, "/", link);
        }
      }
    } else if (key == "trusted_hosts") {
      status = reader.StringList(node, "sources.trusted_hosts", &sources->trusted_hosts);
    } else if (key == "offline") {
      status = reader.Bool(node, "sources.offline", &sources->offline);
    } else {
      return reader.UnknownKey(node, absl::StrCat("sources.", key),
                               "index_url, extra_index_urls, find_links, trusted_hosts, offline");
    }
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status ParseBackends(const Reader& reader, const toml::node& node,
                           std::map<std::string, BackendSettings>* backends) {
  const auto* table = node.as_table();
  if (!table) {
    return reader.Error(node, "backends", absl::StrCat("must be a table of [backends.<name>] tables, not ",
                                                       NodeTypeName(node)));
  }
  for (auto&& [backend_name, backend_node] : *table) {
    std::string backend(backend_name.str());
    std::string prefix = absl::StrCat("backends.", backend);
    const auto* settings_table = backend_node.as_table();
    if (!settings_table) {
      return reader.Error(backend_node, prefix, absl::StrCat("must be a table, not ", NodeTypeName(backend_node)));
    }
    BackendSettings settings;
    for (auto&& [name, value] : *settings_table) {
      std::string key(name.str());
      absl::Status status;
      if (key == "build_env") {
        status = reader.StringMap(value, prefix + ".build_env", &settings.build_env);
        if (status.ok()) status = CheckEnvNames(reader, value, prefix + ".build_env", settings.build_env);
      } else if (key == "wheel_indexes") {
        status = reader.StringList(value, prefix + ".wheel_indexes", &settings.wheel_indexes);
        settings.wheel_indexes_set = true;
      } else {
        return reader.UnknownKey(value, absl::StrCat(prefix, ".", key), "build_env, wheel_indexes");
      }
      if (!status.ok()) return status;
    }
    (*backends)[backend] = std::move(settings);
  }
  return absl::OkStatus();
}

std::string HexSha256(absl::string_view data) { return Sha256Hex(data); }

// --- PEP 508, as far as the key and validation need it -----------------------------------------

bool IsNameChar(char c) { return absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.'; }

struct ParsedRequirement {
  std::string name;                 // as written
  std::vector<std::string> extras;  // as written
  std::vector<std::string> specifiers;  // whitespace removed
  std::string url;
  std::string marker;               // canonical form (MarkerParser)
};

// PEP 508 environment markers: validated, and written back in one canonical form (single
// spaces between tokens, no space inside parentheses, strings in double quotes where they can
// be), so the same marker written with other whitespace or quotes gives the same runtime key.
//   marker = or_expr;  or_expr = and_expr ("or" and_expr)*;  and_expr = atom ("and" atom)*
//   atom = "(" or_expr ")" | value op value;  value = variable | quoted string
//   op = < <= != == >= > ~= === | in | not in
class MarkerParser {
 public:
  explicit MarkerParser(absl::string_view text) : s_(text) {}

  absl::StatusOr<std::string> Parse() {
    absl::StatusOr<std::string> out = OrExpr(0);
    if (!out.ok()) return out;
    SkipSpace();
    if (i_ != s_.size()) return Error(absl::StrCat("unexpected '", s_.substr(i_), "'"));
    return out;
  }

 private:
  static bool IsVariable(absl::string_view name) {
    // PEP 508's variables, and the dotted legacy names pip's packaging still accepts.
    for (absl::string_view known :
         {"python_version", "python_full_version", "os_name", "sys_platform", "platform_release",
          "platform_system", "platform_version", "platform_machine", "platform_python_implementation",
          "implementation_name", "implementation_version", "extra", "os.name", "sys.platform",
          "platform.version", "platform.machine", "platform.python_implementation", "python_implementation"}) {
      if (name == known) return true;
    }
    return false;
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("its marker is not valid PEP 508 (", what, ")"));
  }
  void SkipSpace() {
    while (i_ < s_.size() && absl::ascii_isspace(s_[i_])) ++i_;
  }
  // A keyword ("and", "or", "in", "not") at i_, followed by a non-name character.
  bool Keyword(absl::string_view word) {
    SkipSpace();
    if (!absl::StartsWith(s_.substr(i_), word)) return false;
    size_t end = i_ + word.size();
    if (end < s_.size() && (absl::ascii_isalnum(s_[end]) || s_[end] == '_' || s_[end] == '.')) return false;
    i_ = end;
    return true;
  }
  absl::StatusOr<std::string> OrExpr(int depth) {
    if (depth > 32) return Error("nested too deep");
    absl::StatusOr<std::string> left = AndExpr(depth);
    if (!left.ok()) return left;
    std::string out = *left;
    while (Keyword("or")) {
      absl::StatusOr<std::string> right = AndExpr(depth);
      if (!right.ok()) return right;
      absl::StrAppend(&out, " or ", *right);
    }
    return out;
  }
  absl::StatusOr<std::string> AndExpr(int depth) {
    absl::StatusOr<std::string> left = Atom(depth);
    if (!left.ok()) return left;
    std::string out = *left;
    while (Keyword("and")) {
      absl::StatusOr<std::string> right = Atom(depth);
      if (!right.ok()) return right;
      absl::StrAppend(&out, " and ", *right);
    }
    return out;
  }
  absl::StatusOr<std::string> Atom(int depth) {
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == '(') {
      ++i_;
      absl::StatusOr<std::string> inner = OrExpr(depth + 1);
      if (!inner.ok()) return inner;
      SkipSpace();
      if (i_ >= s_.size() || s_[i_] != ')') return Error("a '(' is not closed");
      ++i_;
      return absl::StrCat("(", *inner, ")");
    }
    absl::StatusOr<std::string> left = Value();
    if (!left.ok()) return left;
    absl::StatusOr<std::string> op = Operator();
    if (!op.ok()) return op.status();
    absl::StatusOr<std::string> right = Value();
    if (!right.ok()) return right;
    return absl::StrCat(*left, " ", *op, " ", *right);
  }
  absl::StatusOr<std::string> Value() {
    SkipSpace();
    if (i_ >= s_.size()) return Error("it ends where a variable or a quoted string should be");
    char c = s_[i_];
    if (c == '\'' || c == '"') {
      size_t close = s_.find(c, i_ + 1);
      if (close == absl::string_view::npos) return Error("a quoted string is not closed");
      absl::string_view text = s_.substr(i_ + 1, close - i_ - 1);
      i_ = close + 1;
      char quote = absl::StrContains(text, '"') ? '\'' : '"';
      return absl::StrCat(std::string(1, quote), text, std::string(1, quote));
    }
    size_t start = i_;
    while (i_ < s_.size() && (absl::ascii_isalnum(s_[i_]) || s_[i_] == '_' || s_[i_] == '.')) ++i_;
    absl::string_view name = s_.substr(start, i_ - start);
    if (name.empty()) return Error(absl::StrCat("unexpected '", s_.substr(start), "'"));
    if (!IsVariable(name)) {
      return Error(absl::StrCat("'", name, "' is not a marker variable such as python_version, sys_platform, "
                                "platform_machine or extra"));
    }
    return std::string(name);
  }
  absl::StatusOr<std::string> Operator() {
    SkipSpace();
    for (absl::string_view op : {"===", "<=", ">=", "==", "!=", "~=", "<", ">"}) {
      if (absl::StartsWith(s_.substr(i_), op)) {
        i_ += op.size();
        return std::string(op);
      }
    }
    if (Keyword("in")) return std::string("in");
    if (Keyword("not")) {
      if (Keyword("in")) return std::string("not in");
      return Error("'not' is not followed by 'in'");
    }
    return Error(i_ < s_.size() ? absl::StrCat("'", s_.substr(i_), "' does not start with a comparison")
                                : "a comparison is missing");
  }

  absl::string_view s_;
  size_t i_ = 0;
};

// Returns an empty optional-like status on failure with the reason.
absl::Status ParseRequirement(absl::string_view text, ParsedRequirement* out) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  size_t i = 0;
  while (i < s.size() && IsNameChar(s[i])) ++i;
  out->name = std::string(s.substr(0, i));
  if (out->name.empty() || !absl::ascii_isalnum(out->name.front()) || !absl::ascii_isalnum(out->name.back())) {
    return absl::InvalidArgumentError("it does not start with a valid project name");
  }
  auto skip_space = [&] { while (i < s.size() && absl::ascii_isspace(s[i])) ++i; };
  skip_space();
  if (i < s.size() && s[i] == '[') {
    size_t close = s.find(']', i);
    if (close == absl::string_view::npos) return absl::InvalidArgumentError("its extras lack a closing ']'");
    for (absl::string_view extra : absl::StrSplit(s.substr(i + 1, close - i - 1), ',')) {
      extra = absl::StripAsciiWhitespace(extra);
      if (extra.empty()) continue;
      for (char c : extra) {
        if (!IsNameChar(c)) return absl::InvalidArgumentError(absl::StrCat("extra '", extra, "' is not a valid name"));
      }
      out->extras.emplace_back(extra);
    }
    i = close + 1;
    skip_space();
  }
  absl::string_view rest = s.substr(i);
  absl::string_view marker;
  if (absl::StartsWith(rest, "@")) {
    rest = absl::StripLeadingAsciiWhitespace(rest.substr(1));
    size_t end = 0;
    while (end < rest.size() && !absl::ascii_isspace(rest[end])) ++end;
    out->url = std::string(rest.substr(0, end));
    if (out->url.empty()) return absl::InvalidArgumentError("'@' is not followed by a URL");
    rest = absl::StripLeadingAsciiWhitespace(rest.substr(end));
    if (!rest.empty()) {
      if (rest[0] != ';') return absl::InvalidArgumentError("only a ';' marker may follow its URL");
      marker = rest.substr(1);
    }
  } else {
    size_t semicolon = rest.find(';');
    absl::string_view version = rest.substr(0, semicolon);
    if (semicolon != absl::string_view::npos) marker = rest.substr(semicolon + 1);
    std::string compact;
    for (char c : version) {
      if (!absl::ascii_isspace(c)) compact.push_back(c);
    }
    if (absl::StartsWith(compact, "(")) {
      if (!absl::EndsWith(compact, ")")) return absl::InvalidArgumentError("its version '(' is not closed");
      compact = compact.substr(1, compact.size() - 2);
    }
    if (!compact.empty()) {
      for (absl::string_view spec : absl::StrSplit(compact, ',')) {
        size_t op = 0;
        while (op < spec.size() && absl::StrContains("<>=!~", spec[op])) ++op;
        absl::string_view oper = spec.substr(0, op);
        if (oper != "<" && oper != ">" && oper != "<=" && oper != ">=" && oper != "==" &&
            oper != "!=" && oper != "~=" && oper != "===") {
          return absl::InvalidArgumentError(absl::StrCat("'", spec, "' is not a version specifier"));
        }
        if (op == spec.size()) return absl::InvalidArgumentError(absl::StrCat("'", spec, "' has no version"));
        out->specifiers.emplace_back(spec);
      }
    }
  }
  if (!marker.empty() || absl::StrContains(rest, ';')) {
    if (absl::StripAsciiWhitespace(marker).empty()) return absl::InvalidArgumentError("its ';' is not followed by a marker");
    absl::StatusOr<std::string> canonical = MarkerParser(marker).Parse();
    if (!canonical.ok()) return canonical.status();
    out->marker = *std::move(canonical);
  }
  return absl::OkStatus();
}

std::vector<std::string> SplitWhitespace(const char* value) {
  if (!value) return {};
  return absl::StrSplit(value, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
}

}  // namespace

// --- JSON forms ---------------------------------------------------------------------------------

nlohmann::json Sources::ToJson() const {
  nlohmann::json json = {{"index_url", index_url},
                         {"extra_index_urls", extra_index_urls},
                         {"find_links", find_links},
                         {"offline", offline}};
  // Only when set, so that the keys of runtimes made before trusted hosts counted stay the same.
  if (!trusted_hosts.empty()) json["trusted_hosts"] = trusted_hosts;
  return json;
}

std::string Sources::OriginKey(absl::string_view field, absl::string_view value) {
  return absl::StrCat(field, "\n", value);
}

std::string Sources::OriginOf(absl::string_view field, absl::string_view value) const {
  auto it = origins.find(OriginKey(field, value));
  return it == origins.end() ? "" : it->second;
}

nlohmann::json Sources::Described() const {
  nlohmann::json rows = nlohmann::json::array();
  auto add = [&](const char* kind, const char* field, const std::string& value) {
    bool used = !offline || IsLocalSource(value);
    nlohmann::json row = {{"kind", kind}, {"value", value}, {"origin", OriginOf(field, value)}, {"used", used}};
    if (!used) row["why_not"] = "offline: not a local source";
    rows.push_back(std::move(row));
  };
  if (index_url.empty()) {
    nlohmann::json row = {{"kind", "index"}, {"value", "https://pypi.org/simple"},
                          {"origin", "pip's default (PyPI)"}, {"used", !offline}};
    if (offline) row["why_not"] = "offline: not a local source";
    rows.push_back(std::move(row));
  } else {
    add("index", "index_url", index_url);
  }
  for (const auto& url : extra_index_urls) add("extra index", "extra_index_urls", url);
  for (const auto& link : find_links) add("find-links", "find_links", link);
  for (const auto& host : trusted_hosts) {
    rows.push_back({{"kind", "trusted host"}, {"value", host}, {"origin", OriginOf("trusted_hosts", host)}, {"used", true}});
  }
  if (offline) rows.push_back({{"kind", "offline"}, {"value", "on"}, {"origin", OriginOf("offline", "on")}, {"used", true}});
  return rows;
}

bool IsLocalSource(absl::string_view url) {
  return absl::StartsWith(url, "file:") || !absl::StrContains(url, "://");
}

nlohmann::json BackendSettings::ToJson() const {
  nlohmann::json json = {{"build_env", build_env}};
  if (wheel_indexes_set) json["wheel_indexes"] = wheel_indexes;
  return json;
}

nlohmann::json RuntimeSpec::ToJson() const {
  nlohmann::json backend_json = nlohmann::json::object();
  for (const auto& [name, settings] : backends) backend_json[name] = settings.ToJson();
  return {{"requirements", requirements},
          {"preload", preload},
          {"libraries", libraries},
          {"backend_package", backend_package},
          {"sources", sources.ToJson()},
          {"build_env", build_env},
          {"backends", backend_json},
          {"origin", origin}};
}

// --- parsing ------------------------------------------------------------------------------------

absl::StatusOr<RuntimeSpec> ParseSpec(const std::string& toml_text, const std::string& origin,
                                      const std::string& base_dir) {
  toml::table root;
  try {
    root = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& error) {
    return ConfigError(absl::StrCat(origin, ":", error.source().begin.line, ":",
                                    error.source().begin.column, ": invalid TOML in the runtime spec: ",
                                    std::string(error.description())));
  }
  Reader reader(origin);
  RuntimeSpec spec;
  spec.origin = origin;
  for (auto&& [name, node] : root) {
    std::string key(name.str());
    absl::Status status;
    if (key == "requirements") {
      status = reader.StringList(node, key, &spec.requirements);
      for (size_t i = 0; status.ok() && i < spec.requirements.size(); ++i) {
        status = CheckRequirement(spec.requirements[i], absl::StrCat(origin, ": requirements"));
      }
      if (status.ok()) {
        std::vector<std::string> unique;
        AppendRequirements(&unique, spec.requirements);
        spec.requirements = std::move(unique);
      }
    } else if (key == "preload") {
      status = reader.StringList(node, key, &spec.preload);
      for (const auto& module : spec.preload) {
        if (status.ok() && !IsModuleName(module)) {
          status = reader.Error(node, key, absl::StrCat("holds '", module, "', which is not a module name (like llama_cpp or a.b)"));
        }
      }
    } else if (key == "libraries") {
      status = reader.StringList(node, key, &spec.libraries);
    } else if (key == "backend_package") {
      status = reader.String(node, key, &spec.backend_package);
      if (status.ok() && !spec.backend_package.empty() && RequirementName(spec.backend_package) != NormalizeName(spec.backend_package)) {
        status = reader.Error(node, key, absl::StrCat("'", spec.backend_package, "' is not a project name"));
      }
    } else if (key == "build_env") {
      status = reader.StringMap(node, key, &spec.build_env);
      if (status.ok()) status = CheckEnvNames(reader, node, key, spec.build_env);
    } else if (key == "sources") {
      if (const auto* table = node.as_table()) {
        status = ParseSources(reader, *table, &spec.sources, base_dir);
      } else {
        status = reader.Error(node, key, absl::StrCat("must be a table ([sources]), not ", NodeTypeName(node)));
      }
    } else if (key == "backends") {
      status = ParseBackends(reader, node, &spec.backends);
    } else {
      return reader.UnknownKey(node, key,
                               "requirements, preload, libraries, backend_package, build_env, "
                               "[sources], [backends.<name>]");
    }
    if (!status.ok()) return status;
  }
  return spec;
}

absl::StatusOr<RuntimeSpec> LoadSpecFile(const std::string& path) {
  if (!PathExists(path)) {
    return ConfigError(absl::StrCat("runtime spec ", path, " does not exist; check --spec / INFERENCEUTILS_SPEC"));
  }
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return ConfigError(absl::StrCat("cannot read runtime spec ", path, ": ", text.status().message()));
  }
  std::string dir = ".";
  if (size_t slash = path.rfind('/'); slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  if (!absl::StartsWith(dir, "/")) {
    if (char* cwd = getcwd(nullptr, 0)) {
      dir = dir == "." ? std::string(cwd) : absl::StrCat(cwd, "/", dir);
      free(cwd);
    }
  }
  return ParseSpec(*text, path, dir);
}

void ApplyBackendSettings(const RuntimeSpec& spec, const std::string& backend,
                          std::map<std::string, std::string>* build_env,
                          std::vector<std::string>* wheel_indexes) {
  for (const auto& [name, value] : spec.build_env) (*build_env)[name] = value;
  auto it = spec.backends.find(backend);
  if (it == spec.backends.end()) return;
  for (const auto& [name, value] : it->second.build_env) (*build_env)[name] = value;
  if (it->second.wheel_indexes_set) *wheel_indexes = it->second.wheel_indexes;
}

// --- overrides ----------------------------------------------------------------------------------

SpecOverrides SpecOverridesFromLookup(const std::map<std::string, std::string>& env) {
  auto get = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  SpecOverrides o;
  if (const char* v = get("INFERENCEUTILS_SPEC")) o.spec_file = v;
  o.with = SplitWhitespace(get("INFERENCEUTILS_WITH"));
  if (const char* v = get("INFERENCEUTILS_INDEX_URL")) o.index_url = std::string(absl::StripAsciiWhitespace(v));
  o.extra_index_urls = SplitWhitespace(get("INFERENCEUTILS_EXTRA_INDEX_URL"));
  o.find_links = SplitWhitespace(get("INFERENCEUTILS_FIND_LINKS"));
  if (const char* v = get("INFERENCEUTILS_OFFLINE")) {
    std::string value = absl::AsciiStrToLower(absl::StripAsciiWhitespace(v));
    o.offline = !(value.empty() || value == "0" || value == "false" || value == "no" || value == "off");
  }
  o.origins = {{"index_url", "INFERENCEUTILS_INDEX_URL"},
               {"extra_index_urls", "INFERENCEUTILS_EXTRA_INDEX_URL"},
               {"find_links", "INFERENCEUTILS_FIND_LINKS"},
               {"offline", "INFERENCEUTILS_OFFLINE"}};
  return o;
}

SpecOverrides SpecOverridesFromEnv() {
  std::map<std::string, std::string> env;
  for (const char* name : {"INFERENCEUTILS_SPEC", "INFERENCEUTILS_WITH", "INFERENCEUTILS_INDEX_URL",
                           "INFERENCEUTILS_EXTRA_INDEX_URL", "INFERENCEUTILS_FIND_LINKS",
                           "INFERENCEUTILS_OFFLINE"}) {
    if (const char* value = std::getenv(name)) env[name] = value;
  }
  return SpecOverridesFromLookup(env);
}

SpecOverrides MergeOverrides(const SpecOverrides& command_line, const SpecOverrides& env) {
  SpecOverrides o;
  o.spec_file = command_line.spec_file.empty() ? env.spec_file : command_line.spec_file;
  o.with = command_line.with.empty() ? env.with : command_line.with;
  o.index_url = command_line.index_url.empty() ? env.index_url : command_line.index_url;
  o.extra_index_urls = command_line.extra_index_urls.empty() ? env.extra_index_urls : command_line.extra_index_urls;
  o.find_links = command_line.find_links.empty() ? env.find_links : command_line.find_links;
  o.offline = command_line.offline || env.offline;
  auto origin = [&](const char* field, bool from_command_line, const char* option) {
    auto it = env.origins.find(field);
    o.origins[field] = from_command_line ? option : it == env.origins.end() ? option : it->second;
  };
  origin("index_url", !command_line.index_url.empty(), "--index-url");
  origin("extra_index_urls", !command_line.extra_index_urls.empty(), "--extra-index-url");
  origin("find_links", !command_line.find_links.empty(), "--find-links");
  origin("offline", command_line.offline, "--offline");
  return o;
}

absl::StatusOr<RuntimeSpec> ResolveSpec(const std::string& assets_dir, const SpecOverrides& overrides,
                                        const ScriptMetadata* script, const PipConfig* pip) {
  absl::StatusOr<RuntimeSpec> loaded;
  if (!overrides.spec_file.empty()) {
    loaded = LoadSpecFile(overrides.spec_file);
  } else {
    std::string path = assets_dir + "/default-spec.toml";
    if (!PathExists(path)) {
      return ConfigError(absl::StrCat("the default runtime spec ", path,
                                      " is missing: the inferenceutils install is incomplete; "
                                      "reinstall it or give a spec with --spec FILE"));
    }
    loaded = LoadSpecFile(path);
    if (loaded.ok()) loaded->origin = "default (" + path + ")";
  }
  if (!loaded.ok()) return loaded.status();
  RuntimeSpec spec = *std::move(loaded);

  for (const auto& requirement : overrides.with) {
    if (auto status = CheckRequirement(requirement, "--with / INFERENCEUTILS_WITH"); !status.ok()) return status;
  }
  AppendRequirements(&spec.requirements, overrides.with);
  if (script && script->present) {
    std::string where = absl::StrCat(script->path, ": PEP 723 dependencies");
    for (const auto& requirement : script->dependencies) {
      if (auto status = CheckRequirement(requirement, where); !status.ok()) return status;
    }
    AppendRequirements(&spec.requirements, script->dependencies);
  }

  // Sources, lowest first: the machine's pip set-up, the spec, INFERENCEUTILS_*, the command line.
  Sources& sources = spec.sources;
  std::string spec_origin = absl::StrCat("spec ", spec.origin);
  auto note = [&](const char* field, const std::string& value, const std::string& origin) {
    sources.origins.emplace(Sources::OriginKey(field, value), origin);  // the first origin stays
  };
  if (!sources.index_url.empty()) note("index_url", sources.index_url, spec_origin);
  for (const auto& url : sources.extra_index_urls) note("extra_index_urls", url, spec_origin);
  for (const auto& link : sources.find_links) note("find_links", link, spec_origin);
  for (const auto& host : sources.trusted_hosts) note("trusted_hosts", host, spec_origin);
  if (sources.offline) note("offline", "on", spec_origin);
  if (pip) {
    if (sources.index_url.empty() && !pip->index_url.value.empty()) {
      sources.index_url = pip->index_url.value;
      note("index_url", sources.index_url, pip->index_url.origin);
    }
    auto fill = [&](const char* field, std::vector<std::string>* list, const std::vector<PipSetting>& from) {
      if (!list->empty()) return;
      for (const auto& setting : from) {
        if (std::find(list->begin(), list->end(), setting.value) != list->end()) continue;
        list->push_back(setting.value);
        note(field, setting.value, setting.origin);
      }
    };
    fill("extra_index_urls", &sources.extra_index_urls, pip->extra_index_urls);
    fill("find_links", &sources.find_links, pip->find_links);
    fill("trusted_hosts", &sources.trusted_hosts, pip->trusted_hosts);
  }
  auto origin_of = [&](const char* field, const char* fallback) {
    auto it = overrides.origins.find(field);
    return it == overrides.origins.end() ? std::string(fallback) : it->second;
  };
  if (!overrides.index_url.empty()) {
    spec.sources.index_url = overrides.index_url;
    sources.origins[Sources::OriginKey("index_url", overrides.index_url)] = origin_of("index_url", "--index-url");
  }
  AppendUnique(&spec.sources.extra_index_urls, overrides.extra_index_urls);
  for (const auto& url : overrides.extra_index_urls) note("extra_index_urls", url, origin_of("extra_index_urls", "--extra-index-url"));
  std::vector<std::string> find_links = overrides.find_links;
  for (auto& link : find_links) {
    if (!IsUrl(link) && !absl::StartsWith(link, "/")) {
      if (char* cwd = getcwd(nullptr, 0)) {
        link = absl::StrCat(cwd, "/", link);
        free(cwd);
      }
    }
  }
  AppendUnique(&spec.sources.find_links, find_links);
  for (const auto& link : find_links) note("find_links", link, origin_of("find_links", "--find-links"));
  if (overrides.offline && !spec.sources.offline) note("offline", "on", origin_of("offline", "--offline"));
  spec.sources.offline = spec.sources.offline || overrides.offline;
  return spec;
}

// --- requirements -------------------------------------------------------------------------------

std::string NormalizeName(absl::string_view name) {
  std::string out;
  bool separator = false;
  for (char c : name) {
    if (c == '-' || c == '_' || c == '.') {
      separator = true;
      continue;
    }
    if (separator && !out.empty()) out.push_back('-');
    separator = false;
    out.push_back(absl::ascii_tolower(c));
  }
  return out;
}

std::string RequirementName(absl::string_view requirement) {
  ParsedRequirement parsed;
  if (!ParseRequirement(requirement, &parsed).ok()) return {};
  return NormalizeName(parsed.name);
}

absl::Status CheckRequirement(absl::string_view requirement, absl::string_view where) {
  ParsedRequirement parsed;
  absl::Status status = ParseRequirement(requirement, &parsed);
  if (status.ok()) return status;
  return ConfigError(absl::StrCat(where, ": '", requirement, "' is not a valid requirement (",
                                  status.message(), "); write it like pip does, e.g. 'numpy>=1.26'"));
}

std::string NormalizeRequirement(const std::string& requirement) {
  ParsedRequirement parsed;
  if (!ParseRequirement(requirement, &parsed).ok()) {
    return std::string(absl::StripAsciiWhitespace(requirement));
  }
  std::string out = NormalizeName(parsed.name);
  std::set<std::string> extras;
  for (const auto& extra : parsed.extras) extras.insert(NormalizeName(extra));
  if (!extras.empty()) absl::StrAppend(&out, "[", absl::StrJoin(extras, ","), "]");
  if (!parsed.url.empty()) {
    absl::StrAppend(&out, " @ ", parsed.url);
  } else {
    std::set<std::string> specifiers(parsed.specifiers.begin(), parsed.specifiers.end());
    absl::StrAppend(&out, absl::StrJoin(specifiers, ","));
  }
  if (!parsed.marker.empty()) absl::StrAppend(&out, parsed.url.empty() ? "; " : " ; ", parsed.marker);
  return out;
}

// --- the key ------------------------------------------------------------------------------------

nlohmann::json RuntimeKeyJson(const RuntimeSpec& spec, const KeyContext& context) {
  std::set<std::string> requirements;
  for (const auto& requirement : spec.requirements) requirements.insert(NormalizeRequirement(requirement));
  std::string backend = context.backend;
  if (backend.empty()) backend = context.profile_key.substr(0, context.profile_key.find('-'));
  nlohmann::json backend_settings = nullptr;
  if (auto it = spec.backends.find(backend); it != spec.backends.end()) {
    backend_settings = it->second.ToJson();
  }
  return {{"format", kRuntimeFormatVersion},
          {"requirements", std::vector<std::string>(requirements.begin(), requirements.end())},
          {"preload", spec.preload},
          {"libraries", spec.libraries},
          {"backend_package", NormalizeName(spec.backend_package)},
          {"sources", spec.sources.ToJson()},
          {"build_env", spec.build_env},
          {"backend_settings", backend_settings},
          {"profile_key", context.profile_key},
          {"python_abi", context.python_abi},
          {"python_home", context.python_home},
          {"platform_tag", context.platform_tag}};
}

std::string RuntimeKeyInputs(const RuntimeSpec& spec, const KeyContext& context) {
  return DumpJson(RuntimeKeyJson(spec, context));  // nlohmann's object keys are sorted
}

std::string RuntimeKey(const RuntimeSpec& spec, const KeyContext& context) {
  return HexSha256(RuntimeKeyInputs(spec, context)).substr(0, 16);
}

}  // namespace iu
