// Index probes: one GET per source, all at once, with a short timeout, through the same proxy,
// CA and client certificate pip would use. libcurl is opened with dlopen (as for bundles): only
// a cold build that asks a network index loads it.
#include "curl_api.h"
#include "index_probe.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <cstring>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inferenceutils/env_values.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/spec.h"

namespace iu {
namespace {

const CurlApi* Curl(std::string* error) {
  const CurlApi* api = LoadCurl(error);
  if (!api) *error += " to ask the index; install libcurl4";
  return api;
}

std::string PercentDecode(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    int hi = 0, lo = 0;
    if (text[i] == '%' && i + 2 < text.size() + 0 && absl::ascii_isxdigit(text[i + 1]) &&
        absl::ascii_isxdigit(text[i + 2])) {
      hi = absl::ascii_isdigit(text[i + 1]) ? text[i + 1] - '0' : absl::ascii_tolower(text[i + 1]) - 'a' + 10;
      lo = absl::ascii_isdigit(text[i + 2]) ? text[i + 2] - '0' : absl::ascii_tolower(text[i + 2]) - 'a' + 10;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The project a wheel or sdist file name is of (normalized), "" when it is neither.
std::string ProjectOf(absl::string_view filename) {
  if (absl::EndsWith(filename, ".whl")) return NormalizeName(filename.substr(0, filename.find('-')));
  for (absl::string_view suffix : {".tar.gz", ".zip", ".tar.bz2", ".tgz"}) {
    if (absl::EndsWith(filename, suffix)) {
      absl::string_view stem = filename.substr(0, filename.size() - suffix.size());
      size_t dash = stem.rfind('-');
      return dash == absl::string_view::npos ? "" : NormalizeName(stem.substr(0, dash));
    }
  }
  return "";
}

// The distribution files of `project` an HTML page links to.
std::vector<std::string> FilesInPage(absl::string_view html, const std::string& project) {
  std::vector<std::string> files;
  size_t pos = 0;
  while ((pos = html.find("href=", pos)) != absl::string_view::npos) {
    pos += 5;
    if (pos >= html.size()) break;
    char quote = html[pos];
    size_t end = quote == '"' || quote == '\'' ? html.find(quote, ++pos) : html.find_first_of(" >", pos);
    if (end == absl::string_view::npos) break;
    absl::string_view href = html.substr(pos, end - pos);
    href = href.substr(0, href.find_first_of("#?"));
    std::string name = PercentDecode(href.substr(href.rfind('/') + 1));
    if (ProjectOf(name) == project && std::find(files.begin(), files.end(), name) == files.end()) {
      files.push_back(name);
    }
    pos = end;
  }
  return files;
}

std::string LocalPath(const std::string& url) {
  if (!absl::StartsWith(url, "file:")) return url;
  absl::string_view rest = absl::string_view(url).substr(5);
  if (absl::StartsWith(rest, "//")) {
    rest.remove_prefix(2);
    rest = rest.substr(std::min(rest.find('/'), rest.size()));  // file://host/path: the path
  }
  return PercentDecode(rest);
}

bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> FilesInDir(const std::string& dir, const std::string& project) {
  std::vector<std::string> files;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (ProjectOf(e->d_name) == project) files.emplace_back(e->d_name);
    }
    closedir(d);
  }
  std::sort(files.begin(), files.end());
  return files;
}

ProbeResult ProbeLocal(const ProbeTarget& target, const std::string& project) {
  ProbeResult r{target.url, "ok", "", {}};
  std::string path(absl::StripSuffix(LocalPath(target.url), "/"));
  if (!IsDir(path) && !(!target.index && PathExists(path))) {
    r.kind = "missing";
    r.why = absl::StrCat("the directory ", path, " does not exist");
    return r;
  }
  if (target.index) path = absl::StrCat(path, "/", project);
  if (IsDir(path)) {
    absl::StatusOr<std::string> page = ReadFile(path + "/index.html");
    r.files = page.ok() ? FilesInPage(*page, project) : FilesInDir(path, project);
  } else if (absl::StatusOr<std::string> page = ReadFile(path); page.ok() && !target.index) {
    r.files = FilesInPage(*page, project);
  } else {
    r.kind = "missing";
    r.why = absl::StrCat("no ", project, " in it (", path, " does not exist)");
  }
  return r;
}

std::string HostOf(const std::string& url, bool with_port) {
  absl::string_view rest = url;
  size_t scheme = rest.find("://");
  if (scheme != absl::string_view::npos) rest.remove_prefix(scheme + 3);
  rest = rest.substr(0, rest.find('/'));
  if (size_t at = rest.rfind('@'); at != absl::string_view::npos) rest.remove_prefix(at + 1);
  if (!with_port && !absl::StartsWith(rest, "[")) rest = rest.substr(0, rest.find(':'));
  return std::string(rest);
}

// The proxy pip (requests) would use for `url`: pip's proxy option, else <scheme>_proxy
// (lower case first), else all_proxy; "" = none.
std::string ProxyFor(const std::string& url, const ProbeOptions& options) {
  if (!options.proxy.empty()) return options.proxy;
  std::string scheme = absl::AsciiStrToLower(url.substr(0, url.find("://")));
  for (const std::string& name : {scheme + "_proxy", absl::AsciiStrToUpper(scheme) + "_PROXY",
                                  std::string("all_proxy"), std::string("ALL_PROXY")}) {
    std::string value = Env(name.c_str());
    if (!value.empty()) return value;
  }
  return "";
}

ProbeResult ProbeNetwork(const CurlApi& c, const ProbeTarget& target, const std::string& project,
                         const ProbeOptions& options) {
  ProbeResult r{target.url, "", "", {}};
  std::string url = target.url;
  if (target.index) url = absl::StrCat(absl::StripSuffix(url, "/"), "/", project, "/");
  CURL* curl = c.easy_init();
  if (!curl) return {target.url, "error", "libcurl could not start a request", {}};
  std::string body, host = HostOf(target.url, false), host_port = HostOf(target.url, true);
  char errbuf[CURL_ERROR_SIZE] = "";
  std::string proxy = ProxyFor(url, options);
  std::string no_proxy = Env("no_proxy").empty() ? Env("NO_PROXY") : Env("no_proxy");
  c.easy_setopt(curl, CURLOPT_URL, url.c_str());
  c.easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  c.easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  c.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  c.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, std::min(5L, options.timeout_s));
  c.easy_setopt(curl, CURLOPT_TIMEOUT, options.timeout_s);
  c.easy_setopt(curl, CURLOPT_USERAGENT, "inferenceutils (index probe)");
  c.easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  c.easy_setopt(curl, CURLOPT_PROXY, proxy.c_str());
  if (!no_proxy.empty()) c.easy_setopt(curl, CURLOPT_NOPROXY, no_proxy.c_str());
  if (!options.cert.empty()) {
    c.easy_setopt(curl, IsDir(options.cert) ? CURLOPT_CAPATH : CURLOPT_CAINFO, options.cert.c_str());
  }
  if (!options.client_cert.empty()) {
    c.easy_setopt(curl, CURLOPT_SSLCERT, options.client_cert.c_str());
    c.easy_setopt(curl, CURLOPT_SSLKEY, options.client_cert.c_str());
  }
  for (const auto& trusted : options.trusted_hosts) {
    if (trusted == host || trusted == host_port) {
      c.easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
      c.easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
  }
  auto append = +[](char* data, size_t size, size_t n, void* out) -> size_t {
    auto* s = static_cast<std::string*>(out);
    if (s->size() > (16u << 20)) return 0;  // a project page, not a download
    s->append(data, size * n);
    return size * n;
  };
  c.easy_setopt(curl, CURLOPT_WRITEFUNCTION, append);
  c.easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  CURLcode rc = c.easy_perform(curl);
  long status = 0, connect_status = 0, os_errno = 0;
  c.easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
  c.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  c.easy_getinfo(curl, CURLINFO_HTTP_CONNECTCODE, &connect_status);
  c.easy_cleanup(curl);
  std::string detail = errbuf[0] ? std::string(errbuf) : c.easy_strerror(rc);
  std::string via = proxy.empty() ? "" : absl::StrCat(" through the proxy ", proxy);
  switch (rc) {
    case CURLE_OK:
      break;
    case CURLE_COULDNT_RESOLVE_HOST:
      return {target.url, "dns", absl::StrCat("DNS: the name '", host, "' does not resolve"), {}};
    case CURLE_COULDNT_RESOLVE_PROXY:
      return {target.url, "proxy", absl::StrCat("proxy: the proxy ", proxy, " does not resolve"), {}};
    case CURLE_OPERATION_TIMEDOUT:
      return {target.url, "timeout",
              absl::StrCat("timeout: no answer from ", host_port, via, " within ", options.timeout_s, " s"), {}};
    case CURLE_COULDNT_CONNECT:
      if (!proxy.empty()) {
        return {target.url, "proxy", absl::StrCat("proxy: cannot connect to the proxy ", proxy, " (", detail, ")"), {}};
      }
      if (os_errno == ECONNREFUSED || absl::StrContains(detail, "refused")) {
        return {target.url, "refused", absl::StrCat("connection refused by ", host_port), {}};
      }
      return {target.url, "connect",
              absl::StrCat("cannot connect to ", host_port, " (", detail,
                           os_errno ? absl::StrCat(": ", std::strerror(static_cast<int>(os_errno))) : "", ")"),
              {}};
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
      return {target.url, "tls", absl::StrCat("TLS: ", detail, " (", host_port, via, ")"), {}};
    default:
      if (!proxy.empty() && (connect_status >= 300 || absl::StrContains(detail, "CONNECT") ||
                             absl::StrContains(absl::AsciiStrToLower(detail), "proxy"))) {
        return {target.url, "proxy",
                absl::StrCat("proxy: ", proxy, " refused the connection to ", host_port,
                             connect_status ? absl::StrCat(" (HTTP ", connect_status, ")") : "", ": ", detail),
                {}};
      }
      return {target.url, "error", absl::StrCat(detail, " (", host_port, via, ")"), {}};
  }
  if (status == 407) {
    return {target.url, "proxy", absl::StrCat("proxy: ", proxy, " wants authentication (HTTP 407)"), {}};
  }
  if (status == 404 || status == 410) {
    r.kind = "missing";
    r.why = absl::StrCat("it has no ", project, target.index ? " (HTTP 404)" : "");
    return r;
  }
  if (status >= 400 || status == 0) {
    return {target.url, "http", absl::StrCat("HTTP ", status, " from ", url), {}};
  }
  r.kind = "ok";
  r.files = FilesInPage(body, project);
  return r;
}

// Hosts that could not be reached earlier in this process (DNS, timeout, proxy, connect): asked
// again for another index on the same host (a fallback's index after the selected backend's, the
// diagnosis after pip failed), they fail the same way at once instead of costing the timeout again.
std::mutex g_unreachable_mutex;
std::map<std::string, ProbeResult>& Unreachable() {
  static auto* hosts = new std::map<std::string, ProbeResult>();
  return *hosts;
}

std::string ReachKey(const ProbeTarget& target, const ProbeOptions& options) {
  return absl::StrCat(HostOf(target.url, true), "|", ProxyFor(target.url, options));
}

bool TransportFailure(const ProbeResult& r) {
  return r.kind == "dns" || r.kind == "timeout" || r.kind == "proxy" || r.kind == "connect" || r.kind == "refused";
}

ProbeResult ProbeNetworkOnce(const CurlApi& c, const ProbeTarget& target, const std::string& project,
                             const ProbeOptions& options) {
  std::string key = ReachKey(target, options);
  {
    std::lock_guard<std::mutex> hold(g_unreachable_mutex);
    auto it = Unreachable().find(key);
    if (it != Unreachable().end()) {
      return {target.url, it->second.kind, absl::StrCat(it->second.why, " (asked earlier in this start)"), {}};
    }
  }
  ProbeResult r = ProbeNetwork(c, target, project, options);
  if (TransportFailure(r)) {
    std::lock_guard<std::mutex> hold(g_unreachable_mutex);
    Unreachable().emplace(key, r);
  }
  return r;
}

}  // namespace

std::vector<ProbeResult> ProbeSources(const std::vector<ProbeTarget>& targets, const std::string& project,
                                      const ProbeOptions& options) {
  std::vector<ProbeResult> results(targets.size());
  std::string normalized = NormalizeName(project);
  std::string curl_error;
  const CurlApi* curl = nullptr;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (IsLocalSource(targets[i].url)) {
      results[i] = ProbeLocal(targets[i], normalized);
      continue;
    }
    if (!curl && curl_error.empty()) curl = Curl(&curl_error);
    if (!curl) {
      results[i] = {targets[i].url, "error", curl_error, {}};
      continue;
    }
    threads.emplace_back([&, i] { results[i] = ProbeNetworkOnce(*curl, targets[i], normalized, options); });
  }
  for (auto& thread : threads) thread.join();
  return results;
}

std::string DistributionVersion(const std::string& filename) {
  if (absl::EndsWith(filename, ".whl")) {
    std::vector<std::string> parts = absl::StrSplit(filename, '-');
    return parts.size() > 1 ? parts[1] : "";
  }
  for (absl::string_view suffix : {".tar.gz", ".zip", ".tar.bz2", ".tgz"}) {
    if (absl::EndsWith(filename, suffix)) {
      std::string stem = filename.substr(0, filename.size() - suffix.size());
      return stem.substr(stem.rfind('-') + 1);
    }
  }
  return "";
}

PipNetworkError PipNetworkErrorIn(const std::string& output) {
  // The last such line counts: pip's retries repeat the same reason.
  size_t pos = std::string::npos;
  for (absl::string_view marker : {"after connection broken by", "Could not fetch URL", "ProxyError",
                                   "SSLError", "NewConnectionError", "ConnectTimeoutError", "ReadTimeoutError"}) {
    size_t at = output.rfind(std::string(marker));
    if (at != std::string::npos && (pos == std::string::npos || at > pos)) pos = at;
  }
  if (pos == std::string::npos) return {};
  size_t start = output.rfind('\n', pos);
  start = start == std::string::npos ? 0 : start + 1;
  std::string line = output.substr(start, output.find('\n', pos) - start);
  std::string lower = absl::AsciiStrToLower(line);
  auto has = [&](absl::string_view text) { return absl::StrContains(lower, absl::AsciiStrToLower(text)); };
  if (has("ProxyError") || has("Tunnel connection failed")) return {"proxy", "proxy: " + line};
  if (has("SSLError") || has("CERTIFICATE_VERIFY_FAILED") || has("ssl")) return {"tls", "TLS: " + line};
  if (has("Name or service not known") || has("Temporary failure in name resolution") ||
      has("nodename nor servname") || has("No address associated") || has("getaddrinfo")) {
    return {"dns", "DNS: a name does not resolve"};
  }
  if (has("Connection refused")) return {"refused", "connection refused"};
  if (has("timed out") || has("TimeoutError")) return {"timeout", "timeout"};
  return {"error", line};
}

}  // namespace iu
