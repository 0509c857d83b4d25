// oci:// references, the registry's auth challenges, docker config credentials, and the
// annotations that carry a profile's requirements in the index.
#include <algorithm>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/paths.h"
#include "oci_internal.h"

namespace iu {

bool IsOciLocation(absl::string_view location) { return absl::StartsWith(location, "oci://"); }

std::string OciReference::ToString() const {
  std::string s = absl::StrCat("oci://", host, "/", repository);
  if (!tag.empty()) absl::StrAppend(&s, ":", tag);
  if (!digest.empty()) absl::StrAppend(&s, "@", digest);
  return s;
}

std::string OciReference::BaseUrl() const {
  return absl::StrCat(plain_http ? "http://" : "https://", host, "/v2/", repository);
}

namespace {

std::string HostName(const std::string& host) {  // without the port; [::1]:5000 → ::1
  if (absl::StartsWith(host, "[")) {
    size_t close = host.find(']');
    return close == std::string::npos ? host : host.substr(1, close - 1);
  }
  size_t colon = host.rfind(':');
  return colon == std::string::npos ? host : host.substr(0, colon);
}

bool ValidRepository(absl::string_view repo) {
  // distribution's grammar: path components of [a-z0-9]+ separated by '.', '_', '__' or '-'+.
  if (repo.empty() || repo.size() > 255) return false;
  for (absl::string_view part : absl::StrSplit(repo, '/')) {
    if (part.empty()) return false;
    if (!absl::ascii_isalnum(part.front()) || !absl::ascii_isalnum(part.back())) return false;
    for (char c : part) {
      if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '.' || c == '_' || c == '-')) return false;
    }
  }
  return true;
}

bool ValidTag(absl::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  if (!(absl::ascii_isalnum(tag[0]) || tag[0] == '_')) return false;
  for (char c : tag) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

bool ValidHost(absl::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  if (absl::StartsWith(host, "[")) {
    size_t close = host.find(']');
    if (close == absl::string_view::npos) return false;
    absl::string_view rest = host.substr(close + 1);
    if (!rest.empty() && (rest[0] != ':' || rest.size() == 1)) return false;
    for (char c : host.substr(1, close - 1)) {
      if (!(absl::ascii_isxdigit(c) || c == ':' || c == '.')) return false;
    }
    for (char c : rest.substr(rest.empty() ? 0 : 1)) {
      if (!absl::ascii_isdigit(c)) return false;
    }
    return true;
  }
  std::vector<absl::string_view> parts = absl::StrSplit(host, ':');
  if (parts.size() > 2 || parts[0].empty()) return false;
  for (char c : parts[0]) {
    if (!(absl::ascii_isalnum(c) || c == '.' || c == '-')) return false;
  }
  if (parts.size() == 2) {
    if (parts[1].empty() || parts[1].size() > 5) return false;
    for (char c : parts[1]) {
      if (!absl::ascii_isdigit(c)) return false;
    }
  }
  return true;
}

}  // namespace

bool PlainHttpAllowed(const std::string& host) {
  std::string name = absl::AsciiStrToLower(HostName(host));
  if (name == "localhost" || name == "::1") return true;
  std::vector<absl::string_view> octets = absl::StrSplit(name, '.');
  bool ipv4 = octets.size() == 4 && std::all_of(octets.begin(), octets.end(), [](absl::string_view o) {
    return !o.empty() && o.size() <= 3 && std::all_of(o.begin(), o.end(), [](char c) { return absl::ascii_isdigit(c); });
  });
  if (ipv4 && octets[0] == "127") return true;  // 127.0.0.0/8
  if (const char* env = std::getenv("INFERENCEUTILS_INSECURE_REGISTRIES")) {
    for (absl::string_view item : absl::StrSplit(env, absl::ByAnyChar(", \t\n"), absl::SkipEmpty())) {
      if (absl::AsciiStrToLower(item) == absl::AsciiStrToLower(host)) return true;
    }
  }
  return false;
}

absl::StatusOr<OciReference> ParseOciReference(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return ConfigError(absl::StrCat("'", text, "' is not an OCI reference (", why,
                                    "); use oci://HOST[:PORT]/REPO[:TAG], e.g. oci://registry.example.com/team/llama:cpu"));
  };
  if (!absl::StartsWith(text, "oci://")) return bad("it does not start with oci://");
  absl::string_view rest = text.substr(6);
  size_t slash = rest.find('/');
  if (slash == absl::string_view::npos) return bad("no repository after the host");
  OciReference ref;
  ref.host = std::string(rest.substr(0, slash));
  if (!ValidHost(ref.host)) return bad("bad host");
  absl::string_view path = rest.substr(slash + 1);
  if (size_t at = path.find('@'); at != absl::string_view::npos) {
    ref.digest = std::string(path.substr(at + 1));
    path = path.substr(0, at);
    if (!oci::IsDigest(ref.digest)) return bad("a digest is sha256: and 64 hex digits");
  }
  size_t last_slash = path.rfind('/');
  size_t colon = path.rfind(':');
  if (colon != absl::string_view::npos && (last_slash == absl::string_view::npos || colon > last_slash)) {
    ref.tag = std::string(path.substr(colon + 1));
    path = path.substr(0, colon);
    if (!ValidTag(ref.tag)) return bad("bad tag: letters, digits, '_', '.', '-', at most 128");
  }
  ref.repository = std::string(path);
  if (!ValidRepository(ref.repository)) {
    return bad("bad repository: lower-case letters, digits and '._-' in '/'-separated parts");
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  ref.plain_http = PlainHttpAllowed(ref.host);
  return ref;
}

namespace oci {

absl::Status RegistryError(absl::string_view message) {
  return WithExit(absl::UnavailableError(message), kExitBundle);
}

bool IsDigest(absl::string_view digest) {
  if (!absl::StartsWith(digest, "sha256:") || digest.size() != 71) return false;
  for (char c : digest.substr(7)) {
    if (!(absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string DigestOf(absl::string_view data) { return "sha256:" + Sha256Hex(data); }

std::optional<Challenge> ParseWwwAuthenticate(absl::string_view header) {
  header = absl::StripAsciiWhitespace(header);
  size_t space = header.find_first_of(" \t");
  Challenge c;
  c.scheme = absl::AsciiStrToLower(header.substr(0, space));
  if (c.scheme.empty()) return std::nullopt;
  if (space == absl::string_view::npos) return c;
  absl::string_view rest = header.substr(space + 1);
  size_t i = 0;
  while (i < rest.size()) {
    while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t' || rest[i] == ',')) ++i;
    size_t eq = rest.find('=', i);
    if (eq == absl::string_view::npos) break;
    std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(rest.substr(i, eq - i)));
    i = eq + 1;
    std::string value;
    if (i < rest.size() && rest[i] == '"') {
      ++i;
      while (i < rest.size() && rest[i] != '"') {
        if (rest[i] == '\\' && i + 1 < rest.size()) ++i;
        value += rest[i++];
      }
      if (i >= rest.size()) return std::nullopt;  // an unterminated quote
      ++i;
    } else {
      size_t end = rest.find(',', i);
      if (end == absl::string_view::npos) end = rest.size();
      value = std::string(absl::StripAsciiWhitespace(rest.substr(i, end - i)));
      i = end;
    }
    if (name.empty()) return std::nullopt;
    c.params[name] = value;
  }
  return c;
}

std::string Base64Encode(absl::string_view data) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    uint32_t n = (uint8_t(data[i]) << 16) | (uint8_t(data[i + 1]) << 8) | uint8_t(data[i + 2]);
    out += {k[n >> 18], k[(n >> 12) & 63], k[(n >> 6) & 63], k[n & 63]};
  }
  if (i + 1 == data.size()) {
    uint32_t n = uint8_t(data[i]) << 16;
    out += {k[n >> 18], k[(n >> 12) & 63], '=', '='};
  } else if (i + 2 == data.size()) {
    uint32_t n = (uint8_t(data[i]) << 16) | (uint8_t(data[i + 1]) << 8);
    out += {k[n >> 18], k[(n >> 12) & 63], k[(n >> 6) & 63], '='};
  }
  return out;
}

std::optional<std::string> Base64Decode(absl::string_view data) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (char c : data) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') { ++pad; continue; }
    else if (c == '\n' || c == '\r') continue;
    else return std::nullopt;
    if (pad) return std::nullopt;  // data after padding
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

absl::StatusOr<std::optional<Credentials>> CredentialsFromDockerConfig(absl::string_view json_text,
                                                                        const std::string& host) {
  nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return absl::InvalidArgumentError("not valid JSON");
  auto auths = doc.find("auths");
  if (auths == doc.end()) return std::optional<Credentials>();
  if (!auths->is_object()) return absl::InvalidArgumentError("\"auths\" is not an object");
  for (const std::string& key : {host, "https://" + host, "http://" + host, "https://" + host + "/v1/",
                                 "http://" + host + "/v1/", "https://" + host + "/", "http://" + host + "/"}) {
    auto it = auths->find(key);
    if (it == auths->end()) continue;
    if (!it->is_object()) return absl::InvalidArgumentError(absl::StrCat("auths \"", key, "\" is not an object"));
    Credentials c;
    if (auto a = it->find("auth"); a != it->end() && a->is_string() && !a->get<std::string>().empty()) {
      std::optional<std::string> decoded = Base64Decode(a->get<std::string>());
      size_t colon = decoded ? decoded->find(':') : std::string::npos;
      if (colon == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("auths \"", key, "\" auth is not base64 of user:password"));
      }
      c.username = decoded->substr(0, colon);
      c.password = decoded->substr(colon + 1);
    } else {
      auto u = it->find("username"), p = it->find("password");
      if (u != it->end() && u->is_string()) c.username = u->get<std::string>();
      if (p != it->end() && p->is_string()) c.password = p->get<std::string>();
    }
    if (c.empty()) continue;
    return std::optional<Credentials>(c);
  }
  return std::optional<Credentials>();
}

absl::StatusOr<std::optional<Credentials>> FindCredentials(const std::string& host) {
  if (const char* env = std::getenv("INFERENCEUTILS_REGISTRY_AUTH"); env && *env) {
    std::string value = env;
    size_t colon = value.find(':');
    if (colon == std::string::npos) {
      return ConfigError("INFERENCEUTILS_REGISTRY_AUTH must be USER:PASSWORD; fix or unset it");
    }
    return std::optional<Credentials>(Credentials{value.substr(0, colon), value.substr(colon + 1)});
  }
  std::string file;
  if (const char* dir = std::getenv("DOCKER_CONFIG"); dir && *dir) {
    file = absl::StrCat(dir, "/config.json");
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    file = absl::StrCat(home, "/.docker/config.json");
  }
  if (file.empty() || !IsRegularFile(file)) return std::optional<Credentials>();
  absl::StatusOr<std::string> text = ReadFile(file);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::optional<Credentials>> found = CredentialsFromDockerConfig(*text, host);
  if (!found.ok()) {
    return ConfigError(absl::StrCat("docker config ", file, ": ", found.status().message(),
                                    "; fix it (or point DOCKER_CONFIG at another folder)"));
  }
  return found;
}

std::string OciArchitecture(const std::string& arch) {
  if (arch == "x86_64") return "amd64";
  if (arch == "aarch64") return "arm64";
  return arch;
}

nlohmann::json AnnotationsFor(const nlohmann::json& bundle) {
  const nlohmann::json& req = bundle.at("requires");
  nlohmann::json a = {
      {std::string(kAnnotation) + "key", bundle.value("key", "")},
      {std::string(kAnnotation) + "backend", bundle.value("backend", "")},
      {std::string(kAnnotation) + "profile", bundle.value("profile_key", "")},
      {std::string(kAnnotation) + "requires", DumpJson(req)},
      {std::string(kAnnotation) + "key_inputs", DumpJson(bundle.value("key_inputs", nlohmann::json::object()))},
      {std::string(kAnnotation) + "cpu_isa", req.value("cpu_isa", "")},
      {std::string(kAnnotation) + "min_glibc", req.value("min_glibc", "")},
      {std::string(kAnnotation) + "python.abi", req.value("python", nlohmann::json::object()).value("abi", "")},
      {std::string(kAnnotation) + "python.home", req.value("python", nlohmann::json::object()).value("home", "")},
      {"org.opencontainers.image.created", bundle.value("created", "")},
  };
  if (req.contains("cuda") && req["cuda"].is_object()) {
    std::vector<std::string> ccs = req["cuda"].value("compute_capabilities", std::vector<std::string>{});
    a[std::string(kAnnotation) + "cuda.compute_capabilities"] = absl::StrJoin(ccs, ",");
    a[std::string(kAnnotation) + "cuda.min_driver"] = req["cuda"].value("min_driver_cuda", "");
  }
  return a;
}

absl::StatusOr<nlohmann::json> BundleManifestFromAnnotations(const nlohmann::json& annotations) {
  if (!annotations.is_object()) return absl::InvalidArgumentError("no annotations (not pushed by inferenceutils?)");
  auto text = [&](const char* name) -> absl::StatusOr<std::string> {
    auto it = annotations.find(std::string(kAnnotation) + name);
    if (it == annotations.end() || !it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("no ", kAnnotation, name, " annotation (not pushed by inferenceutils?)"));
    }
    return it->get<std::string>();
  };
  nlohmann::json m = nlohmann::json::object();
  for (const char* name : {"key", "backend", "profile"}) {
    absl::StatusOr<std::string> v = text(name);
    if (!v.ok()) return v.status();
    m[std::string(name) == "profile" ? "profile_key" : name] = *v;
  }
  for (const char* name : {"requires", "key_inputs"}) {
    absl::StatusOr<std::string> v = text(name);
    if (!v.ok()) return v.status();
    nlohmann::json parsed = nlohmann::json::parse(*v, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("annotation ", kAnnotation, name, " is not a JSON object"));
    }
    m[name] = parsed;
  }
  return m;
}

}  // namespace oci
}  // namespace iu
