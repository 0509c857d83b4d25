#include "inferenceutils/env_values.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "inferenceutils/errors.h"

namespace iu {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

absl::StatusOr<absl::Duration> ParseSeconds(const std::string& name, const std::string& value,
                                            absl::Duration minimum) {
  absl::string_view v = absl::StripAsciiWhitespace(value);
  bool digits = !v.empty();
  int dots = 0;
  for (char c : v) {
    if (c == '.') ++dots;
    else if (!absl::ascii_isdigit(c)) digits = false;
  }
  double seconds = 0;
  bool ok = digits && dots <= 1 && v != "." && absl::SimpleAtod(v, &seconds) && std::isfinite(seconds) &&
            seconds <= 1e9 && absl::Seconds(seconds) >= minimum;
  if (!ok) {
    return ConfigError(absl::StrCat(name, "='", value, "' is not a number of seconds",
                                    minimum > absl::ZeroDuration() ? absl::StrCat(" of at least ", absl::FormatDuration(minimum))
                                                                   : std::string(),
                                    "; give a whole or decimal number of seconds",
                                    minimum > absl::ZeroDuration() ? "" : " (0: do not wait)",
                                    ", e.g. ", name, "=600, or unset it for the default"));
  }
  return absl::Seconds(seconds);
}

absl::StatusOr<uint64_t> ParseBytes(const std::string& name, const std::string& value) {
  std::string v = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(value));
  size_t digits = 0;
  while (digits < v.size() && absl::ascii_isdigit(v[digits])) ++digits;
  std::string suffix = v.substr(digits);
  int shift = -1;
  if (suffix.empty() || suffix == "B") shift = 0;
  for (auto [letter, bits] : {std::pair{'K', 10}, {'M', 20}, {'G', 30}, {'T', 40}}) {
    if (suffix == std::string(1, letter) || suffix == absl::StrCat(std::string(1, letter), "B") ||
        suffix == absl::StrCat(std::string(1, letter), "IB")) {
      shift = bits;
    }
  }
  uint64_t number = 0;
  bool ok = digits > 0 && digits <= 19 && shift >= 0 && absl::SimpleAtoi(v.substr(0, digits), &number) && number > 0 &&
            (shift == 0 || number <= (~uint64_t{0} >> shift));
  if (!ok) {
    return ConfigError(absl::StrCat(name, "='", value, "' is not a size; give a whole number of bytes > 0, "
                                    "optionally with K, M, G or T (powers of 1024), e.g. ", name, "=20G, or unset it for the default"));
  }
  return number << shift;
}

absl::StatusOr<absl::Duration> EnvSeconds(const char* name, absl::Duration fallback, absl::Duration minimum) {
  std::string value = Env(name);
  if (value.empty()) return fallback;
  return ParseSeconds(name, value, minimum);
}

absl::StatusOr<uint64_t> EnvBytes(const char* name, uint64_t fallback) {
  std::string value = Env(name);
  if (value.empty()) return fallback;
  return ParseBytes(name, value);
}

absl::Status CheckEnvValues() {
  if (auto v = EnvSeconds("INFERENCEUTILS_LOCK_TIMEOUT", absl::Seconds(kDefaultLockTimeoutSeconds)); !v.ok()) {
    return v.status();
  }
  if (auto v = EnvSeconds("INFERENCEUTILS_DOWNLOAD_TIMEOUT", absl::Seconds(kDefaultDownloadTimeoutSeconds),
                          absl::Seconds(1));
      !v.ok()) {
    return v.status();
  }
  if (auto v = EnvBytes("INFERENCEUTILS_BUNDLE_MAX_BYTES", kDefaultBundleMaxBytes); !v.ok()) return v.status();
  if (std::string v = Env("INFERENCEUTILS_PROGRESSIVE"); !v.empty() && v != "0" && v != "1") {
    return ConfigError(absl::StrCat("INFERENCEUTILS_PROGRESSIVE='", v, "' is neither 0 nor 1; set it to 0 (build the ",
                                    "selected runtime in the foreground), 1, or unset it (docs/progressive.md)"));
  }
  if (std::string v = Env("INFERENCEUTILS_APP_TERMINAL"); !v.empty() && v != "0" && v != "1") {
    return ConfigError(absl::StrCat("INFERENCEUTILS_APP_TERMINAL='", v, "' is neither 0 nor 1; set it to 0 (no terminal), ",
                                    "1 (a terminal) or unset it"));
  }
  return absl::OkStatus();
}

}  // namespace iu
