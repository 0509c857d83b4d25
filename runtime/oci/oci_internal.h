// Pieces shared by the OCI files (reference, auth, HTTP client, push, pull). Not a public interface.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/oci.h"
#include "nlohmann/json.hpp"

namespace iu::oci {

constexpr char kIndexType[] = "application/vnd.oci.image.index.v1+json";
constexpr char kManifestType[] = "application/vnd.oci.image.manifest.v1+json";
constexpr char kArtifactType[] = "application/vnd.inferenceutils.runtime.v1";
constexpr char kConfigType[] = "application/vnd.inferenceutils.bundle.v1+json";
constexpr char kLayerType[] = "application/vnd.oci.image.layer.v1.tar+zstd";
constexpr char kAnnotation[] = "io.inferenceutils.";   // prefix of our annotations
constexpr uint64_t kMaxManifestBytes = 4ull << 20;      // manifests and indexes (as registries bound them)
constexpr uint64_t kMaxTokenBytes = 1ull << 20;

// An error of the registry transport: one line, exit 77.
absl::Status RegistryError(absl::string_view message);

// "sha256:<64 hex>"
bool IsDigest(absl::string_view digest);

// WWW-Authenticate: Basic realm="x" | Bearer realm="https://auth",service="reg",scope="repository:a:pull"
struct Challenge {
  std::string scheme;                          // lower case: "basic", "bearer"
  std::map<std::string, std::string> params;   // names lower case
};
std::optional<Challenge> ParseWwwAuthenticate(absl::string_view header);

// Credentials for `host` from a docker config.json text (auths: "auth" base64 user:password, or
// "username"/"password"; keys "host", "https://host", "http://host", with or without "/v1/").
struct Credentials {
  std::string username, password;
  bool empty() const { return username.empty() && password.empty(); }
};
absl::StatusOr<std::optional<Credentials>> CredentialsFromDockerConfig(absl::string_view json_text,
                                                                        const std::string& host);
// INFERENCEUTILS_REGISTRY_AUTH (user:password), else $DOCKER_CONFIG/config.json, else
// ~/.docker/config.json. A config that cannot be parsed is an error naming it.
absl::StatusOr<std::optional<Credentials>> FindCredentials(const std::string& host);

std::string Base64Encode(absl::string_view data);
std::optional<std::string> Base64Decode(absl::string_view data);

// One HTTP exchange with a registry.
struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names, last value
  std::string body;                            // when read into memory
  std::string url;                             // the URL that answered (after redirects)
};

struct Request {
  std::string method = "GET";
  std::string url;                             // absolute
  std::vector<std::string> headers;            // "Name: value"
  const std::string* body = nullptr;           // PUT/POST from memory
  int upload_fd = -1;                          // PUT from a file (upload_size bytes)
  uint64_t upload_size = 0;
  int download_fd = -1;                        // GET into a file (appending), else into body
  uint64_t download_offset = 0;                // Range: bytes=offset-
  uint64_t max_bytes = kMaxManifestBytes;      // a body larger than this is refused
  std::string what;                            // "manifest sha256:…" for errors
  std::function<void(uint64_t)> on_progress;   // bytes of this transfer so far
};

// Talks to one repository of one registry: auth (anonymous, Basic, Bearer token), redirects
// (followed to http(s) only, never to file: or other schemes; plain http only where allowed),
// timeouts, size bounds.
class Client {
 public:
  Client(OciReference ref, bool push);
  const OciReference& ref() const { return ref_; }
  // Sends `request` (relative URLs are below BaseUrl()), answering auth challenges once.
  absl::StatusOr<Response> Send(Request request);
  // Another repository of the same registry needs pull access too (a cross-repository mount).
  void AddPullScope(const std::string& repository);

 private:
  absl::StatusOr<Response> SendOnce(Request& request, bool* retry_with_auth);
  absl::Status Authenticate(const Challenge& challenge);

  OciReference ref_;
  std::set<std::string> scopes_;
  std::string authorization_;   // "Authorization: ..." or ""
  int auth_rounds_ = 0;
};

// A manifest or an index read from the registry (<= 4 MiB), checked against `digest` when given.
absl::StatusOr<Response> GetManifest(Client& client, const std::string& reference, const std::string& expected_digest);

std::string DigestOf(absl::string_view data);  // "sha256:…"

// What bundle selection needs of a profile, from an index entry's (or a manifest's) annotations:
// {key, backend, profile_key, requires, key_inputs}; an error says which annotation is bad.
absl::StatusOr<nlohmann::json> BundleManifestFromAnnotations(const nlohmann::json& annotations);

// The annotations of a runtime's bundle.json (what selection reads from the index).
nlohmann::json AnnotationsFor(const nlohmann::json& bundle);

// The repositories of a registry a cached blob is known to be in (<blob>.repos, one host/repo a
// line): where a push tries a cross-repository mount from.
std::vector<std::string> KnownRepositories(const std::string& blob_path, const std::string& host);
void RememberRepository(const std::string& blob_path, const OciReference& ref);

// "x86_64" → "amd64", "aarch64" → "arm64" (OCI/Go names).
std::string OciArchitecture(const std::string& arch);

}  // namespace iu::oci
