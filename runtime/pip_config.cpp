// pip's configuration files and PIP_* variables, read the way pip 23 reads them
// (pip/_internal/configuration.py): files in the order global ($XDG_CONFIG_DIRS/pip/pip.conf,
// /etc/pip.conf), user (~/.pip/pip.conf, $XDG_CONFIG_HOME/pip/pip.conf; skipped when
// PIP_CONFIG_FILE names an existing file), then $PIP_CONFIG_FILE, a later file winning; within
// them [install] wins over [global]; a PIP_* variable wins over every file.
#include "inferenceutils/pip_config.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inferenceutils/paths.h"

extern char** environ;

namespace iu {
namespace {

// (section, key) -> value and the file it came from; a later file replaces an earlier one.
using IniValues = std::map<std::pair<std::string, std::string>, PipSetting>;

std::string NormalizeKey(absl::string_view key) {
  std::string out = absl::AsciiStrToLower(absl::StripAsciiWhitespace(key));
  absl::StrReplaceAll({{"_", "-"}}, &out);
  return out;
}

// configparser's format as far as pip.conf uses it: [section], key = value or key: value,
// comment lines starting with # or ;, indented continuation lines.
void ParseIni(const std::string& path, const std::string& text, IniValues* values) {
  std::string section;
  std::pair<std::string, std::string> last;
  bool have_last = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripSuffix(line, "\r");
    absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (stripped.empty() || stripped[0] == '#' || stripped[0] == ';') continue;
    if (have_last && absl::ascii_isspace(line[0])) {
      absl::StrAppend(&(*values)[last].value, "\n", stripped);
      continue;
    }
    have_last = false;
    if (stripped[0] == '[') {
      size_t close = stripped.find(']');
      section = absl::AsciiStrToLower(stripped.substr(1, close == absl::string_view::npos ? stripped.size() - 1 : close - 1));
      continue;
    }
    size_t delim = stripped.find_first_of("=:");
    if (delim == absl::string_view::npos || section.empty()) continue;
    last = {section, NormalizeKey(stripped.substr(0, delim))};
    (*values)[last] = {std::string(absl::StripAsciiWhitespace(stripped.substr(delim + 1))),
                       absl::StrCat(path, " [", section, "]")};
    have_last = true;
  }
}

std::string Get(const std::map<std::string, std::string>& env, const char* name) {
  auto it = env.find(name);
  return it == env.end() ? "" : it->second;
}

std::vector<PipSetting> SplitList(const PipSetting& setting) {
  std::vector<PipSetting> out;
  for (absl::string_view item : absl::StrSplit(setting.value, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty())) {
    out.push_back({std::string(item), setting.origin});
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> PipConfig::ConnectionEnv() const {
  std::map<std::string, std::string> env;
  for (const auto& [key, setting] : connection) {
    std::string name = absl::StrCat("PIP_", absl::AsciiStrToUpper(key));
    absl::StrReplaceAll({{"-", "_"}}, &name);
    env[name] = setting.value;
  }
  return env;
}

PipConfig ReadPipConfig(const std::map<std::string, std::string>& env) {
  PipConfig config;
  std::string env_file = Get(env, "PIP_CONFIG_FILE");
  IniValues values;
  if (env_file != "/dev/null") {
    std::vector<std::string> files;
    std::string xdg_dirs = Get(env, "XDG_CONFIG_DIRS");
    if (xdg_dirs.empty()) xdg_dirs = "/etc/xdg";
    for (absl::string_view dir : absl::StrSplit(xdg_dirs, ':', absl::SkipEmpty())) {
      files.push_back(absl::StrCat(dir, "/pip/pip.conf"));
    }
    files.push_back("/etc/pip.conf");
    std::string home = Get(env, "HOME");
    if (!(!env_file.empty() && PathExists(env_file)) && !home.empty()) {
      files.push_back(home + "/.pip/pip.conf");
      std::string xdg_home = Get(env, "XDG_CONFIG_HOME");
      files.push_back((xdg_home.empty() ? home + "/.config" : xdg_home) + "/pip/pip.conf");
    }
    if (!env_file.empty()) files.push_back(env_file);
    for (const std::string& file : files) {
      absl::StatusOr<std::string> text = ReadFile(file);
      if (!text.ok()) continue;
      config.files.push_back(file);
      ParseIni(file, *text, &values);
    }
  }
  // The effective value of one option: PIP_<NAME> (any of its names), else [install], else [global].
  auto effective = [&](const std::vector<const char*>& names) -> PipSetting {
    for (const char* name : names) {
      std::string var = absl::StrCat("PIP_", absl::AsciiStrToUpper(name));
      absl::StrReplaceAll({{"-", "_"}}, &var);
      std::string value(absl::StripAsciiWhitespace(Get(env, var.c_str())));
      if (!value.empty()) return {value, var};
    }
    for (const char* section : {"install", "global"}) {
      for (const char* name : names) {
        auto it = values.find({section, name});
        if (it != values.end() && !it->second.value.empty()) return it->second;
      }
    }
    return {};
  };
  config.index_url = effective({"index-url", "i"});
  config.extra_index_urls = SplitList(effective({"extra-index-url"}));
  config.find_links = SplitList(effective({"find-links", "f"}));
  for (auto& link : config.find_links) {
    if (absl::StartsWith(link.value, "~/")) link.value = Get(env, "HOME") + link.value.substr(1);
    if (!absl::StrContains(link.value, "://") && !absl::StartsWith(link.value, "/")) {
      if (char* cwd = getcwd(nullptr, 0)) {
        link.value = absl::StrCat(cwd, "/", link.value);
        free(cwd);
      }
    }
  }
  config.trusted_hosts = SplitList(effective({"trusted-host"}));
  for (const auto& [key, names] : std::map<std::string, std::vector<const char*>>{
           {"cert", {"cert"}}, {"client-cert", {"client-cert"}}, {"proxy", {"proxy"}},
           {"timeout", {"timeout", "default-timeout"}}, {"retries", {"retries"}}}) {
    PipSetting setting = effective(names);
    if (!setting.value.empty()) config.connection[key] = setting;
  }
  return config;
}

PipConfig PipConfigFromEnv() {
  std::map<std::string, std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    absl::string_view text(*entry);
    size_t eq = text.find('=');
    if (eq == absl::string_view::npos) continue;
    absl::string_view name = text.substr(0, eq);
    if (absl::StartsWith(name, "PIP_") || absl::StartsWith(name, "XDG_CONFIG_") || name == "HOME") {
      env.emplace(std::string(name), std::string(text.substr(eq + 1)));
    }
  }
  return ReadPipConfig(env);
}

}  // namespace iu
