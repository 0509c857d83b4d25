// `runtime push`: the runtime's layers (oci_layers.cpp) and bundle.json (the config) uploaded
// to a repository, skipping what it has (HEAD) or can mount from another repository of the same
// registry, then the profile's manifest, then the index at the tag: read, the profile's entry
// added or replaced, written, and read back (and once more after a pause) until it holds the
// entry — two machines pushing different profiles at once lose neither.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bundle/bundle_internal.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/paths.h"
#include "oci_internal.h"
#include "oci_layers.h"

namespace iu {
namespace {

using oci::Client;
using oci::Request;
using oci::Response;

}  // namespace

namespace oci {

std::vector<std::string> KnownRepositories(const std::string& blob_path, const std::string& host) {
  std::vector<std::string> out;
  absl::StatusOr<std::string> text = ReadFile(blob_path + ".repos");
  if (!text.ok()) return out;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, host + "/")) {
      std::string repo(line.substr(host.size() + 1));
      if (std::find(out.begin(), out.end(), repo) == out.end()) out.push_back(repo);
    }
  }
  return out;
}

void RememberRepository(const std::string& blob_path, const OciReference& ref) {
  std::string line = absl::StrCat(ref.host, "/", ref.repository);
  for (const auto& r : KnownRepositories(blob_path, ref.host)) {
    if (r == ref.repository) return;
  }
  int fd = open((blob_path + ".repos").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return;
  line += "\n";
  (void)!write(fd, line.data(), line.size());
  close(fd);
}

}  // namespace oci

namespace {

using oci::KnownRepositories;
using oci::RememberRepository;

std::string Absolute(const OciReference& ref, const std::string& location) {
  if (absl::StartsWith(location, "http://") || absl::StartsWith(location, "https://")) return location;
  return absl::StrCat(ref.plain_http ? "http://" : "https://", ref.host,
                      absl::StartsWith(location, "/") ? "" : "/", location);
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == ':' ? std::string("%3A") : std::string(1, c);
  return out;
}

absl::Status Unexpected(const OciReference& ref, const std::string& what, const Response& r) {
  std::string body = r.body.substr(0, 300);
  std::replace(body.begin(), body.end(), '\n', ' ');
  return oci::RegistryError(absl::StrCat("registry ", ref.host, " answered HTTP ", r.status, " to ", what,
                                         body.empty() ? "" : ": " + body));
}

struct BlobToSend {
  std::string name;        // for messages
  std::string digest;
  uint64_t size = 0;
  std::string path;        // a file, or
  const std::string* data = nullptr;
};

absl::Status SendBlob(Client& client, const BlobToSend& blob, OciPushResult* result, Progress& progress) {
  const OciReference& ref = client.ref();
  result->total_bytes += blob.size;
  Request head;
  head.method = "HEAD";
  head.url = "/blobs/" + blob.digest;
  head.what = "blob " + blob.digest;
  absl::StatusOr<Response> r = client.Send(head);
  if (!r.ok()) return r.status();
  if (r->status == 200) {
    ++result->present;
    if (!blob.path.empty()) RememberRepository(blob.path, ref);
    return absl::OkStatus();
  }
  std::string location;
  // A cross-repository mount from where this machine pushed or pulled the blob before.
  for (const auto& from : blob.path.empty() ? std::vector<std::string>{} : KnownRepositories(blob.path, ref.host)) {
    if (from == ref.repository) continue;
    client.AddPullScope(from);
    Request mount;
    mount.method = "POST";
    mount.url = absl::StrCat("/blobs/uploads/?mount=", Escape(blob.digest), "&from=", from);
    mount.what = absl::StrCat("a mount of ", blob.digest, " from ", from);
    absl::StatusOr<Response> m = client.Send(mount);
    if (!m.ok()) return m.status();
    if (m->status == 201) {
      ++result->mounted;
      RememberRepository(blob.path, ref);
      return absl::OkStatus();
    }
    if (m->status == 202 && m->headers.count("location")) {
      location = m->headers["location"];  // the registry started an upload instead
      break;
    }
  }
  if (location.empty()) {
    Request start;
    start.method = "POST";
    start.url = "/blobs/uploads/";
    start.what = "the start of an upload";
    absl::StatusOr<Response> s = client.Send(start);
    if (!s.ok()) return s.status();
    if (s->status != 202 || !s->headers.count("location")) return Unexpected(ref, start.what, *s);
    location = s->headers["location"];
  }
  std::string url = Absolute(ref, location);
  url += absl::StrContains(url, "?") ? "&" : "?";
  url += "digest=" + Escape(blob.digest);
  Request put;
  put.method = "PUT";
  put.url = url;
  put.headers = {"Content-Type: application/octet-stream"};
  put.what = absl::StrCat("the upload of ", blob.name, " (", blob.digest, ")");
  int fd = -1;
  if (blob.data) {
    put.body = blob.data;
  } else {
    fd = open(blob.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return StoreError(absl::StrCat("cannot read ", blob.path, ": ", std::strerror(errno)));
    put.upload_fd = fd;
    put.upload_size = blob.size;
  }
  put.on_progress = [&](uint64_t sent) {
    progress.Detail(absl::StrCat("uploading ", blob.name, ": ", sent >> 20, " / ", blob.size >> 20, " MiB"));
  };
  absl::StatusOr<Response> p = client.Send(put);
  if (fd >= 0) close(fd);
  if (!p.ok()) return p.status();
  if (p->status != 201) return Unexpected(ref, put.what, *p);
  ++result->uploaded;
  result->uploaded_bytes += blob.size;
  if (!blob.path.empty()) RememberRepository(blob.path, ref);
  return absl::OkStatus();
}

std::string ProfileOf(const nlohmann::json& entry) {
  if (!entry.is_object()) return "";
  auto a = entry.find("annotations");
  if (a == entry.end() || !a->is_object()) return "";
  auto p = a->find(std::string(oci::kAnnotation) + "profile");
  return p != a->end() && p->is_string() ? p->get<std::string>() : "";
}

// The index at the tag (an empty one when there is none); an error when the tag holds
// something else than an index of runtimes.
absl::StatusOr<nlohmann::json> ReadIndex(Client& client) {
  const OciReference& ref = client.ref();
  Request r;
  r.url = "/manifests/" + ref.tag;
  r.headers = {absl::StrCat("Accept: ", oci::kIndexType, ", ", oci::kManifestType)};
  r.what = "the index " + ref.tag;
  absl::StatusOr<Response> got = client.Send(r);
  if (!got.ok()) return got.status();
  nlohmann::json empty = {{"schemaVersion", 2}, {"mediaType", oci::kIndexType}, {"manifests", nlohmann::json::array()}};
  if (got->status == 404) return empty;
  if (got->status != 200) return Unexpected(ref, r.what, *got);
  nlohmann::json doc = nlohmann::json::parse(got->body, nullptr, false);
  if (doc.is_object() && doc.contains("manifests") && doc["manifests"].is_array()) return doc;
  if (doc.is_object() && doc.contains("layers") && doc.contains("annotations") && !ProfileOf(doc).empty()) {
    // The tag named one runtime manifest: it becomes the first entry of an index.
    nlohmann::json entry = {{"mediaType", oci::kManifestType},
                            {"digest", oci::DigestOf(got->body)},
                            {"size", got->body.size()},
                            {"annotations", doc["annotations"]}};
    empty["manifests"].push_back(entry);
    return empty;
  }
  return oci::RegistryError(absl::StrCat(ref.ToString(), " holds something else than an index of runtimes; ",
                                         "push to another tag"));
}

}  // namespace

absl::StatusOr<OciPushResult> PushRuntime(const Store& store, const std::string& prefix, const OciReference& ref,
                                          const OciPushOptions& options, Progress& progress) {
  if (!ref.digest.empty() || ref.tag.empty()) {
    return ConfigError(absl::StrCat("push needs a tag, not a digest: ", ref.ToString(), " (oci://HOST/REPO:TAG)"));
  }
  absl::StatusOr<bundle_internal::PackPlan> plan = bundle_internal::PlanPack(prefix, options.pack, progress);
  if (!plan.ok()) return plan.status();
  std::string blobs = store.root() + "/blobs";
  if (auto s = MakeDirs(blobs + "/sha256", "set INFERENCEUTILS_HOME to a writable directory"); !s.ok()) return s;

  // The layers, written into the blob cache (their digests must be known before the upload).
  std::vector<oci::LayerPlan> layers = oci::SplitIntoLayers(*plan);
  std::vector<oci::LayerBlob> written;
  nlohmann::json layer_descriptors = nlohmann::json::array();
  progress.Step("packing the layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    progress.Detail(absl::StrCat("packing layer ", i + 1, " / ", layers.size(), " (", layers[i].name, ")"));
    absl::StatusOr<oci::LayerBlob> blob = oci::WriteLayer(*plan, layers[i], blobs, options.pack);
    if (!blob.ok()) return blob.status();
    layer_descriptors.push_back({{"mediaType", oci::kLayerType},
                                 {"digest", blob->digest},
                                 {"size", blob->size},
                                 {"annotations", {{"org.opencontainers.image.title", layers[i].name},
                                                  {std::string(oci::kAnnotation) + "layer", layers[i].kind}}}});
    written.push_back(*blob);
  }
  const std::string config = DumpJson(plan->bundle, 1) + "\n";
  const std::string config_digest = oci::DigestOf(config);
  nlohmann::json annotations = oci::AnnotationsFor(plan->bundle);
  nlohmann::json manifest = {
      {"schemaVersion", 2},
      {"mediaType", oci::kManifestType},
      {"artifactType", oci::kArtifactType},
      {"config", {{"mediaType", oci::kConfigType}, {"digest", config_digest}, {"size", config.size()}}},
      {"layers", layer_descriptors},
      {"annotations", annotations},
  };
  const std::string manifest_text = DumpJson(manifest, 1);
  const std::string manifest_digest = oci::DigestOf(manifest_text);

  OciPushResult result;
  result.reference = ref.ToString();
  result.manifest_digest = manifest_digest;
  result.profile_key = plan->bundle.value("profile_key", "");
  result.layers = static_cast<int>(layers.size());
  Client client(ref, true);
  progress.Step(absl::StrCat("pushing to ", ref.ToString()));
  if (auto s = SendBlob(client, {"bundle.json", config_digest, config.size(), "", &config}, &result, progress); !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < written.size(); ++i) {
    if (auto s = SendBlob(client, {layers[i].name, written[i].digest, written[i].size, written[i].path, nullptr},
                          &result, progress);
        !s.ok()) {
      return s;
    }
  }
  Request put;
  put.method = "PUT";
  put.url = "/manifests/" + manifest_digest;
  put.headers = {absl::StrCat("Content-Type: ", oci::kManifestType)};
  put.body = &manifest_text;
  put.what = "the manifest " + manifest_digest;
  absl::StatusOr<Response> p = client.Send(put);
  if (!p.ok()) return p.status();
  if (p->status != 201) return Unexpected(ref, put.what, *p);

  // The index: read, merge, write, read back; again after a pause, since a registry has no
  // compare-and-swap and another machine may have written an index read before ours.
  const std::string arch = plan->bundle.value("requires", nlohmann::json::object()).value("arch", "");
  nlohmann::json entry = {{"mediaType", oci::kManifestType},
                          {"digest", manifest_digest},
                          {"size", manifest_text.size()},
                          {"platform", {{"os", "linux"}, {"architecture", oci::OciArchitecture(arch)}}},
                          {"annotations", annotations}};
  std::mt19937 random(static_cast<unsigned>(getpid() ^ time(nullptr)));
  auto holds = [&](const nlohmann::json& index) {
    for (const auto& m : index["manifests"]) {
      if (m.is_object() && m.value("digest", "") == manifest_digest) return true;
    }
    return false;
  };
  progress.Step(absl::StrCat("updating the index ", ref.ToString()));
  int confirmed = 0;
  for (int attempt = 1; attempt <= 30; ++attempt) {
    result.index_attempts = attempt;
    absl::StatusOr<nlohmann::json> index = ReadIndex(client);
    if (!index.ok()) return index.status();
    if (holds(*index)) {
      if (++confirmed >= 2) {
        result.profiles = static_cast<int>((*index)["manifests"].size());
        result.index_digest = oci::DigestOf(DumpJson(*index, 1));
        break;
      }
    } else {
      confirmed = 0;
      nlohmann::json manifests = nlohmann::json::array();
      for (const auto& m : (*index)["manifests"]) {
        if (ProfileOf(m) != result.profile_key) manifests.push_back(m);
      }
      manifests.push_back(entry);
      std::sort(manifests.begin(), manifests.end(),
                [](const nlohmann::json& a, const nlohmann::json& b) { return ProfileOf(a) < ProfileOf(b); });
      nlohmann::json updated = {{"schemaVersion", 2}, {"mediaType", oci::kIndexType}, {"manifests", manifests}};
      std::string text = DumpJson(updated, 1);
      Request put_index;
      put_index.method = "PUT";
      put_index.url = "/manifests/" + ref.tag;
      put_index.headers = {absl::StrCat("Content-Type: ", oci::kIndexType)};
      put_index.body = &text;
      put_index.what = "the index " + ref.tag;
      absl::StatusOr<Response> pi = client.Send(put_index);
      if (!pi.ok()) return pi.status();
      if (pi->status != 201) return Unexpected(ref, put_index.what, *pi);
      result.index_digest = oci::DigestOf(text);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + static_cast<int>(random() % 350)));
    if (attempt == 30) {
      return oci::RegistryError(absl::StrCat("the index ", ref.ToString(), " kept losing this profile's entry ",
                                             "(other pushes at once?); run the push again"));
    }
  }
  progress.Finish();
  return result;
}

}  // namespace iu
