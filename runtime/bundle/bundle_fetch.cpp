// Downloads with libcurl: a bundle index (small, in memory) and bundles (to the store's cache,
// resuming a partial download, with a timeout, checked against their SHA-256 before use).
//
// libcurl is opened with dlopen on the first download, not linked: linked, it and its ~35
// dependencies (TLS, Kerberos, LDAP, ICU, ...) cost every start of the launcher milliseconds in
// the dynamic loader, and only a bundle download needs it.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <mutex>
#include <type_traits>

#include "curl_api.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bundle_internal.h"
#include "inferenceutils/env_values.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/oci.h"
#include "inferenceutils/paths.h"

namespace iu {
namespace {

// libcurl, loaded once; an error names the library and the package that provides it.
absl::StatusOr<const CurlApi*> Curl() {
  std::string error;
  const CurlApi* api = LoadCurl(&error);
  if (!api) return WithExit(absl::UnavailableError(error + "; install libcurl4 to download bundles"), kExitBundle);
  return api;
}

long TimeoutSeconds() {  // a bad value was refused before the command started (CheckEnvValues)
  absl::Duration d = EnvSeconds("INFERENCEUTILS_DOWNLOAD_TIMEOUT", absl::Seconds(kDefaultDownloadTimeoutSeconds),
                                absl::Seconds(1))
                         .value_or(absl::Seconds(kDefaultDownloadTimeoutSeconds));
  return std::max<long>(1, static_cast<long>(absl::ToInt64Seconds(d)));
}

size_t AppendString(char* data, size_t size, size_t n, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (s->size() + size * n > bundle_internal::kMaxManifestBytes * 4) return 0;
  s->append(data, size * n);
  return size * n;
}

size_t AppendFile(char* data, size_t size, size_t n, void* fd_ptr) {
  int fd = *static_cast<int*>(fd_ptr);
  size_t total = size * n, off = 0;
  while (off < total) {
    ssize_t w = write(fd, data + off, total - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    off += static_cast<size_t>(w);
  }
  return total;
}

struct ProgressContext {
  Progress* progress;
  std::string name;
  curl_off_t offset;
  curl_off_t last = -1;
};

int OnProgress(void* p, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* ctx = static_cast<ProgressContext*>(p);
  if (now - ctx->last < (1 << 20) && now != total) return 0;
  ctx->last = now;
  curl_off_t mib = (ctx->offset + now) >> 20;
  ctx->progress->Detail(total > 0 ? absl::StrCat("downloading ", ctx->name, ": ", mib, " / ",
                                                 (ctx->offset + total) >> 20, " MiB")
                                  : absl::StrCat("downloading ", ctx->name, ": ", mib, " MiB"));
  return 0;
}

void CommonOptions(const CurlApi& c, CURL* curl, const std::string& url) {
  c.easy_setopt(curl, CURLOPT_URL, url.c_str());
  c.easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  c.easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  c.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
  // A stalled transfer (under 1 byte/s for the timeout) is abandoned; the partial file stays.
  c.easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  c.easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, TimeoutSeconds());
  c.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  c.easy_setopt(curl, CURLOPT_USERAGENT, "inferenceutils");
}

absl::Status DownloadError(const std::string& url, const std::string& why) {
  return WithExit(absl::UnavailableError(absl::StrCat("cannot download bundle ", url, ": ", why)), kExitBundle);
}

}  // namespace

absl::StatusOr<std::string> HttpGetSmall(const std::string& url) {
  absl::StatusOr<const CurlApi*> api = Curl();
  if (!api.ok()) return api.status();
  const CurlApi& c = **api;
  CURL* curl = c.easy_init();
  std::string body;
  CommonOptions(c, curl, url);
  c.easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendString);
  c.easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  c.easy_setopt(curl, CURLOPT_TIMEOUT, TimeoutSeconds());
  CURLcode rc = c.easy_perform(curl);
  long status = 0;
  c.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  c.easy_cleanup(curl);
  if (rc != CURLE_OK) return DownloadError(url, c.easy_strerror(rc));
  if (status >= 400) return DownloadError(url, absl::StrCat("HTTP ", status));
  return body;
}

absl::StatusOr<std::string> FetchBundle(const Store& store, const BundleCandidate& candidate, Progress& progress) {
  const std::string& url = candidate.location;
  if (IsOciLocation(url)) return FetchOciBundle(store, candidate, progress);  // blobs from a registry
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) return url;
  absl::StatusOr<const CurlApi*> api = Curl();
  if (!api.ok()) return api.status();
  const CurlApi& c = **api;
  std::string dir = store.root() + "/cache/bundles";
  if (auto s = MakeDirs(dir, "set INFERENCEUTILS_HOME to a writable directory"); !s.ok()) return s;
  std::string name = url.substr(url.find_last_of('/') + 1);
  std::string id = candidate.sha256.empty() ? Sha256Hex(url).substr(0, 16) : candidate.sha256.substr(0, 16);
  std::string final_path = absl::StrCat(dir, "/", id, "-", name);
  std::string part = final_path + ".part";
  auto verify = [&](const std::string& file) -> absl::Status {
    if (candidate.sha256.empty()) return absl::OkStatus();
    Sha256 sha;
    int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return StoreError(absl::StrCat("cannot read ", file));
    std::string buf(1 << 20, '\0');
    ssize_t n;
    while ((n = read(fd, buf.data(), buf.size())) > 0) sha.Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
    close(fd);
    std::string got = sha.HexDigest();
    if (got != candidate.sha256) {
      unlink(file.c_str());
      return bundle_internal::Refused(url, "", absl::StrCat("SHA-256 of the download is ", got, ", not ", candidate.sha256));
    }
    return absl::OkStatus();
  };
  if (IsRegularFile(final_path)) {
    if (verify(final_path).ok()) return final_path;
  }

  progress.Step(absl::StrCat("downloading ", name));
  struct stat st;
  curl_off_t offset = stat(part.c_str(), &st) == 0 ? st.st_size : 0;
  int fd = open(part.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return StoreError(absl::StrCat("cannot write ", part, ": ", std::strerror(errno)));
  CURL* curl = c.easy_init();
  CommonOptions(c, curl, url);
  if (offset > 0) {
    progress.Note(absl::StrCat("resuming the download of ", name, " at ", offset >> 20, " MiB"));
    c.easy_setopt(curl, CURLOPT_RESUME_FROM_LARGE, offset);
  }
  c.easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendFile);
  c.easy_setopt(curl, CURLOPT_WRITEDATA, &fd);
  ProgressContext ctx{&progress, name, offset};
  c.easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
  c.easy_setopt(curl, CURLOPT_XFERINFODATA, &ctx);
  c.easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  CURLcode rc = c.easy_perform(curl);
  long status = 0;
  c.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  c.easy_cleanup(curl);
  close(fd);
  if (offset > 0 && (rc == CURLE_RANGE_ERROR || (status == 200 && rc == CURLE_OK))) {
    // The server ignored the range and sent the whole file after what we had: start over.
    unlink(part.c_str());
    return DownloadError(url, "the server does not support resuming; run again to download it whole");
  }
  if (status == 416) {  // the range starts at the end: the partial file is complete (or stale)
    rc = CURLE_OK;
  } else if (status >= 400) {
    unlink(part.c_str());
    return DownloadError(url, absl::StrCat("HTTP ", status));
  }
  if (rc != CURLE_OK) {
    return DownloadError(url, absl::StrCat(c.easy_strerror(rc), "; run again to resume (", part, ")"));
  }
  if (auto s = verify(part); !s.ok()) return s;
  if (rename(part.c_str(), final_path.c_str()) != 0) {
    return StoreError(absl::StrCat("cannot rename ", part, ": ", std::strerror(errno)));
  }
  progress.Finish();
  return final_path;
}

}  // namespace iu
