// HTTP to an OCI registry with libcurl (opened with dlopen, runtime/curl_api.h): auth as the
// container tools do it (anonymous first; on a 401, Basic from the docker config, or a Bearer
// token from the realm the registry names), redirects followed by hand so that only http(s) is
// ever followed (plain http only where PlainHttpAllowed) and credentials never go to another
// host, timeouts (INFERENCEUTILS_DOWNLOAD_TIMEOUT), and a bound on every body read into memory.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "curl_api.h"
#include "inferenceutils/env_values.h"
#include "oci_internal.h"

namespace iu::oci {
namespace {

absl::StatusOr<const CurlApi*> Curl() {
  std::string error;
  const CurlApi* api = LoadCurl(&error);
  if (!api) return RegistryError(error + "; install libcurl4 to use OCI registries");
  return api;
}

long TimeoutSeconds() {
  absl::Duration d = EnvSeconds("INFERENCEUTILS_DOWNLOAD_TIMEOUT", absl::Seconds(kDefaultDownloadTimeoutSeconds),
                                absl::Seconds(1))
                         .value_or(absl::Seconds(kDefaultDownloadTimeoutSeconds));
  return std::max<long>(1, static_cast<long>(absl::ToInt64Seconds(d)));
}

std::string UrlHost(const std::string& url) {
  size_t start = url.find("://");
  if (start == std::string::npos) return "";
  start += 3;
  size_t end = url.find_first_of("/?#", start);
  std::string authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
  if (size_t at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  return absl::AsciiStrToLower(authority);
}

std::string Scheme(const std::string& url) {
  size_t colon = url.find(':');
  return colon == std::string::npos ? "" : absl::AsciiStrToLower(url.substr(0, colon));
}

std::string Escape(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

struct Transfer {
  Request* request;
  Response* response;
  long status = 0;
  uint64_t received = 0;
  uint64_t sent = 0;
  bool too_big = false;
  bool write_error = false;
  bool truncated_part = false;  // a 200 to a ranged request: the file starts over
  std::string error_body;
};

size_t OnHeader(char* data, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  absl::string_view line(data, size * n);
  if (absl::StartsWith(line, "HTTP/")) {  // a new response (100 Continue, then the real one)
    t->response->headers.clear();
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 2));
    if (parts.size() >= 2) (void)absl::SimpleAtoi(parts[1], &t->status);
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    t->response->headers[absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return size * n;
}

size_t OnData(char* data, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  size_t total = size * n;
  if (t->status < 200 || t->status >= 300) {  // a redirect's or an error's body: kept small, never in the file
    if (t->error_body.size() < 4096) t->error_body.append(data, std::min<size_t>(total, 4096 - t->error_body.size()));
    return total;
  }
  Request& r = *t->request;
  if (r.download_fd >= 0) {
    if (t->received == 0 && r.download_offset > 0 && t->status == 200) {
      // The server ignored the range: the whole blob follows, so the partial file starts over.
      if (ftruncate(r.download_fd, 0) != 0) {
        t->write_error = true;
        return 0;
      }
      t->truncated_part = true;
    }
    uint64_t have = (t->truncated_part || r.download_offset == 0 ? 0 : r.download_offset) + t->received;
    if (have + total > r.max_bytes) {
      t->too_big = true;
      return 0;
    }
    size_t off = 0;
    while (off < total) {
      ssize_t w = write(r.download_fd, data + off, total - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        t->write_error = true;
        return 0;
      }
      off += static_cast<size_t>(w);
    }
  } else {
    if (t->response->body.size() + total > r.max_bytes) {
      t->too_big = true;
      return 0;
    }
    t->response->body.append(data, total);
  }
  t->received += total;
  if (r.on_progress) r.on_progress(t->received);
  return total;
}

size_t OnRead(char* buffer, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  Request& r = *t->request;
  if (t->sent >= r.upload_size) return 0;
  size_t want = static_cast<size_t>(std::min<uint64_t>(size * n, r.upload_size - t->sent));
  ssize_t got = pread(r.upload_fd, buffer, want, static_cast<off_t>(t->sent));
  if (got < 0) return CURL_READFUNC_ABORT;
  t->sent += static_cast<uint64_t>(got);
  if (r.on_progress) r.on_progress(t->sent);
  return static_cast<size_t>(got);
}

}  // namespace

Client::Client(OciReference ref, bool push) : ref_(std::move(ref)) {
  scopes_.insert(absl::StrCat("repository:", ref_.repository, push ? ":pull,push" : ":pull"));
}

void Client::AddPullScope(const std::string& repository) {
  scopes_.insert(absl::StrCat("repository:", repository, ":pull"));
}

absl::StatusOr<Response> Client::SendOnce(Request& request, bool* retry_with_auth) {
  *retry_with_auth = false;
  absl::StatusOr<const CurlApi*> api = Curl();
  if (!api.ok()) return api.status();
  const CurlApi& c = **api;
  std::string url = request.url;
  const std::string registry_host = absl::AsciiStrToLower(ref_.host);
  for (int hop = 0;; ++hop) {
    std::string scheme = Scheme(url);
    std::string host = UrlHost(url);
    if (scheme != "https" && scheme != "http") {
      return RegistryError(absl::StrCat("registry ", ref_.host, " redirected ", request.what, " to '", url,
                                        "', which is not an http(s) URL; refused (a hostile or misconfigured registry)"));
    }
    if (scheme == "http" && !PlainHttpAllowed(host)) {
      return RegistryError(absl::StrCat("registry ", ref_.host, ": ", request.what, " leads to plain http (", url,
                                        "); refused: plain HTTP only for loopback or a host listed in "
                                        "INFERENCEUTILS_INSECURE_REGISTRIES"));
    }
    Response response;
    Transfer t{&request, &response, 0, 0, 0, false, false, false, {}};
    CURL* curl = c.easy_init();
    if (!curl) return RegistryError("libcurl could not start a transfer");
    curl_slist* headers = nullptr;
    for (const auto& h : request.headers) headers = c.slist_append(headers, h.c_str());
    if (!authorization_.empty() && host == registry_host) headers = c.slist_append(headers, authorization_.c_str());
    headers = c.slist_append(headers, "Expect:");
    std::string range;
    if (request.download_offset > 0) {
      range = absl::StrCat("Range: bytes=", request.download_offset, "-");
      headers = c.slist_append(headers, range.c_str());
    }
    c.easy_setopt(curl, CURLOPT_URL, url.c_str());
    c.easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    c.easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    c.easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    c.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
    c.easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    c.easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, TimeoutSeconds());
    if (request.download_fd < 0 && request.upload_fd < 0) c.easy_setopt(curl, CURLOPT_TIMEOUT, TimeoutSeconds());
    c.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    c.easy_setopt(curl, CURLOPT_USERAGENT, "inferenceutils");
    c.easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
    c.easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    c.easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnData);
    c.easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    const std::string& method = request.method;
    if (method == "HEAD") {
      c.easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (request.upload_fd >= 0) {
      c.easy_setopt(curl, CURLOPT_UPLOAD, 1L);
      c.easy_setopt(curl, CURLOPT_READFUNCTION, OnRead);
      c.easy_setopt(curl, CURLOPT_READDATA, &t);
      c.easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.upload_size));
      if (method != "PUT") c.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    } else if (request.body) {
      c.easy_setopt(curl, CURLOPT_POSTFIELDS, request.body->data());
      c.easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body->size()));
      if (method != "POST") c.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    } else if (method != "GET") {
      c.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
      if (method == "POST" || method == "PUT") {
        c.easy_setopt(curl, CURLOPT_POSTFIELDS, "");
        c.easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(0));
      }
    }
    CURLcode rc = c.easy_perform(curl);
    char* redirect = nullptr;
    c.easy_getinfo(curl, CURLINFO_REDIRECT_URL, &redirect);
    std::string next = redirect ? redirect : "";
    c.easy_cleanup(curl);
    c.slist_free_all(headers);
    response.status = t.status;
    response.url = url;
    if (t.too_big) {
      return RegistryError(absl::StrCat("registry ", ref_.host, ": ", request.what, " is larger than ",
                                        request.max_bytes, " bytes; refused (a hostile or broken registry)"));
    }
    if (t.write_error) return StoreError(absl::StrCat("cannot write ", request.what, ": ", std::strerror(errno)));
    if (rc != CURLE_OK) {
      return RegistryError(absl::StrCat("registry ", ref_.host, ": ", request.what, " (", url, "): ", c.easy_strerror(rc),
                                        rc == CURLE_OPERATION_TIMEDOUT ? " (INFERENCEUTILS_DOWNLOAD_TIMEOUT)" : "",
                                        "; check that the registry is reachable and run again"));
    }
    // Redirects are followed for reads (blobs in storage); an upload that is redirected is the
    // caller's unexpected status, never resent somewhere else as a GET.
    bool read = request.method == "GET" || request.method == "HEAD";
    if (read && t.status >= 300 && t.status < 400 && t.status != 304) {
      if (next.empty()) next = response.headers.count("location") ? response.headers["location"] : "";
      if (next.empty()) return RegistryError(absl::StrCat("registry ", ref_.host, ": ", request.what, ": a redirect without a Location"));
      if (hop >= 10) return RegistryError(absl::StrCat("registry ", ref_.host, ": ", request.what, ": more than 10 redirects"));
      url = next;
      continue;
    }
    if (t.status == 401 && host == registry_host) *retry_with_auth = true;
    if (t.status >= 400 && response.body.empty()) response.body = t.error_body;
    return response;
  }
}

absl::Status Client::Authenticate(const Challenge& challenge) {
  ++auth_rounds_;
  absl::StatusOr<std::optional<Credentials>> creds = FindCredentials(ref_.host);
  if (!creds.ok()) return creds.status();
  if (challenge.scheme == "basic") {
    if (!creds->has_value()) {
      return RegistryError(absl::StrCat("registry ", ref_.host, " asks for a login (HTTP 401, Basic); log in with "
                                        "`docker login ", ref_.host, "` (~/.docker/config.json, or $DOCKER_CONFIG), "
                                        "or set INFERENCEUTILS_REGISTRY_AUTH=USER:PASSWORD"));
    }
    if (absl::StartsWith(authorization_, "Authorization: Basic")) {
      return RegistryError(absl::StrCat("registry ", ref_.host, " refused the login of '", (*creds)->username,
                                        "' (HTTP 401); check the password in the docker config or INFERENCEUTILS_REGISTRY_AUTH"));
    }
    authorization_ = "Authorization: Basic " + Base64Encode((*creds)->username + ":" + (*creds)->password);
    return absl::OkStatus();
  }
  if (challenge.scheme != "bearer") {
    return RegistryError(absl::StrCat("registry ", ref_.host, " asks for '", challenge.scheme,
                                      "' authentication, which inferenceutils does not speak (Basic and Bearer only)"));
  }
  auto realm_it = challenge.params.find("realm");
  if (realm_it == challenge.params.end() || realm_it->second.empty()) {
    return RegistryError(absl::StrCat("registry ", ref_.host, ": a Bearer challenge without a realm"));
  }
  if (auth_rounds_ > 2) {
    return RegistryError(absl::StrCat("registry ", ref_.host, " refused the token it issued (HTTP 401 again); ",
                                      creds->has_value() ? "the login may lack access to " : "log in for access to ",
                                      ref_.repository));
  }
  if (auto it = challenge.params.find("scope"); it != challenge.params.end()) {
    for (absl::string_view s : absl::StrSplit(it->second, ' ', absl::SkipEmpty())) scopes_.insert(std::string(s));
  }
  std::string url = realm_it->second;
  url += absl::StrContains(url, "?") ? "&" : "?";
  std::vector<std::string> query;
  if (auto it = challenge.params.find("service"); it != challenge.params.end()) query.push_back("service=" + Escape(it->second));
  for (const auto& s : scopes_) query.push_back("scope=" + Escape(s));
  url += absl::StrJoin(query, "&");
  // The token server is another host: a client of its own, so the registry's credentials go only
  // where the docker config names them (the realm's host) — as docker does, Basic to the realm.
  OciReference realm_ref = ref_;
  realm_ref.host = UrlHost(url);
  Client token_client(realm_ref, false);
  if (creds->has_value()) {
    token_client.authorization_ = "Authorization: Basic " + Base64Encode((*creds)->username + ":" + (*creds)->password);
  }
  token_client.auth_rounds_ = 99;  // never answer a challenge of the token server itself
  Request r;
  r.url = url;
  r.max_bytes = kMaxTokenBytes;
  r.what = "the token";
  bool again = false;
  absl::StatusOr<Response> got = token_client.SendOnce(r, &again);
  if (!got.ok()) return got.status();
  if (got->status != 200) {
    return RegistryError(absl::StrCat("token server ", realm_it->second, " answered HTTP ", got->status, " for ",
                                      ref_.repository, creds->has_value() ? "; check the login in the docker config"
                                                                          : "; log in with `docker login ", ref_.host, "`"));
  }
  nlohmann::json doc = nlohmann::json::parse(got->body, nullptr, false);
  std::string token;
  if (doc.is_object()) {
    for (const char* name : {"token", "access_token"}) {
      if (auto it = doc.find(name); it != doc.end() && it->is_string() && !it->get<std::string>().empty()) {
        token = it->get<std::string>();
        break;
      }
    }
  }
  if (token.empty() || token.find_first_of("\r\n") != std::string::npos) {
    return RegistryError(absl::StrCat("token server ", realm_it->second, " sent no token (a JSON object with \"token\")"));
  }
  authorization_ = "Authorization: Bearer " + token;
  return absl::OkStatus();
}

absl::StatusOr<Response> Client::Send(Request request) {
  if (!absl::StartsWith(request.url, "http://") && !absl::StartsWith(request.url, "https://")) {
    request.url = ref_.BaseUrl() + request.url;
  }
  for (;;) {
    bool retry = false;
    absl::StatusOr<Response> r = SendOnce(request, &retry);
    if (!r.ok() || !retry) return r;
    auto it = r->headers.find("www-authenticate");
    std::optional<Challenge> challenge =
        it == r->headers.end() ? std::nullopt : ParseWwwAuthenticate(it->second);
    if (!challenge) {
      return RegistryError(absl::StrCat("registry ", ref_.host, " answered HTTP 401 to ", request.what,
                                        " without a usable WWW-Authenticate challenge"));
    }
    if (auth_rounds_ >= 3) {
      return RegistryError(absl::StrCat("registry ", ref_.host, " denies ", request.what,
                                        " (HTTP 401); check the login for ", ref_.repository));
    }
    if (auto s = Authenticate(*challenge); !s.ok()) return s;
  }
}

absl::StatusOr<Response> GetManifest(Client& client, const std::string& reference, const std::string& expected_digest) {
  Request r;
  r.url = "/manifests/" + reference;
  r.headers = {absl::StrCat("Accept: ", kIndexType, ", ", kManifestType)};
  r.what = absl::StrCat("manifest ", reference);
  r.max_bytes = kMaxManifestBytes;
  absl::StatusOr<Response> got = client.Send(r);
  if (!got.ok()) return got;
  if (got->status == 404) {
    return RegistryError(absl::StrCat("registry ", client.ref().host, " has no manifest '", reference, "' in ",
                                      client.ref().repository,
                                      " (HTTP 404); push one with `inferenceutils runtime push` or check the tag"));
  }
  if (got->status != 200) {
    return RegistryError(absl::StrCat("registry ", client.ref().host, " answered HTTP ", got->status, " to ", r.what));
  }
  std::string digest = DigestOf(got->body);
  if (!expected_digest.empty() && digest != expected_digest) {
    return RegistryError(absl::StrCat(client.ref().ToString(), ": manifest ", reference, " has the digest ", digest,
                                      ", not ", expected_digest, "; refused (a hostile or broken registry)"));
  }
  return got;
}

}  // namespace iu::oci
