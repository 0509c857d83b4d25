// oci:// as a bundle source: the index at a tag lists one candidate per profile (what selection
// needs rides in its annotations); the chosen profile's manifest, bundle.json (its config) and
// layers are fetched into <store>/blobs/sha256 (a blob already there is not fetched again; a
// partial one resumes with Range), every digest checked, and handed to UnpackBundle as a bundle
// in parts: bundle.json as a first tar, then the layers, one zstd tar stream. So every member
// check of a .tar.zst bundle applies, and what fails leaves the store as it was.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bundle/bundle_internal.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/env_values.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/paths.h"
#include "oci_internal.h"
#include "stream_writers.h"

namespace iu {
namespace {

using oci::Client;
using oci::RegistryError;
using oci::Request;
using oci::Response;

absl::Status Hostile(const OciReference& ref, absl::string_view what) {
  return RegistryError(absl::StrCat(ref.ToString(), ": ", what, "; refused (a hostile or broken registry)"));
}

const nlohmann::json* Field(const nlohmann::json& j, const char* name) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(name);
  return it == j.end() ? nullptr : &*it;
}

struct Descriptor {
  std::string digest;
  uint64_t size = 0;
  std::string title;
};

absl::StatusOr<Descriptor> ParseDescriptor(const OciReference& ref, const nlohmann::json& d, const char* media_type,
                                           const char* what) {
  const nlohmann::json* mt = Field(d, "mediaType");
  const nlohmann::json* digest = Field(d, "digest");
  const nlohmann::json* size = Field(d, "size");
  if (!mt || !mt->is_string() || mt->get<std::string>() != media_type) {
    return Hostile(ref, absl::StrCat("the manifest's ", what, " is not of type ", media_type));
  }
  if (!digest || !digest->is_string() || !oci::IsDigest(digest->get<std::string>())) {
    return Hostile(ref, absl::StrCat("the manifest's ", what, " has no sha256 digest"));
  }
  if (!size || !size->is_number_unsigned()) return Hostile(ref, absl::StrCat("the manifest's ", what, " has no size"));
  Descriptor out{digest->get<std::string>(), size->get<uint64_t>(), ""};
  if (const nlohmann::json* a = Field(d, "annotations")) {
    if (const nlohmann::json* t = Field(*a, "org.opencontainers.image.title"); t && t->is_string()) {
      out.title = t->get<std::string>();
    }
  }
  return out;
}

// A blob into <store>/blobs/sha256/<hex>: resumed from its .part (locked, so two launchers of
// one store do not write it at once), checked against its digest and size. *fetched: it was
// not there before.
absl::Status FetchBlob(Client& client, const Descriptor& d, const std::string& blobs, Progress& progress,
                       bool* fetched) {
  const OciReference& ref = client.ref();
  *fetched = false;
  std::string final_path = absl::StrCat(blobs, "/sha256/", d.digest.substr(7));
  struct stat st;
  if (lstat(final_path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) == d.size) {
    return absl::OkStatus();
  }
  std::string part = final_path + ".part";
  int fd = open(part.c_str(), O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return StoreError(absl::StrCat("cannot write ", part, ": ", std::strerror(errno)));
  if (flock(fd, LOCK_EX) != 0) {
    close(fd);
    return StoreError(absl::StrCat("cannot lock ", part, ": ", std::strerror(errno)));
  }
  if (lstat(final_path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) == d.size) {
    close(fd);  // another launcher fetched it meanwhile
    return absl::OkStatus();
  }
  fstat(fd, &st);
  uint64_t offset = static_cast<uint64_t>(st.st_size);
  if (offset >= d.size) {
    if (ftruncate(fd, 0) != 0) {}
    offset = 0;
  }
  std::string name = d.title.empty() ? d.digest.substr(0, 19) : d.title;
  if (offset > 0) progress.Note(absl::StrCat("resuming the download of ", name, " at ", offset >> 20, " MiB"));
  Request r;
  r.url = "/blobs/" + d.digest;
  r.download_fd = fd;
  r.download_offset = offset;
  r.max_bytes = d.size;
  r.what = absl::StrCat("blob ", d.digest, " (", name, ")");
  r.on_progress = [&](uint64_t got) {
    progress.Detail(absl::StrCat("downloading ", name, ": ", (offset + got) >> 20, " / ", d.size >> 20, " MiB"));
  };
  absl::StatusOr<Response> got = client.Send(r);
  if (!got.ok()) {
    struct stat now;
    bool empty = fstat(fd, &now) == 0 && now.st_size == 0;
    close(fd);
    if (empty) {  // nothing to resume from: nothing is left behind
      unlink(part.c_str());
      return got.status();
    }
    if (absl::StrContains(got.status().message(), "larger than")) {
      unlink(part.c_str());
      return Hostile(ref, absl::StrCat("blob ", d.digest, " is larger than the ", d.size, " bytes its manifest says"));
    }
    return WithExit(absl::UnavailableError(absl::StrCat(got.status().message(), "; run again to resume (", part, ")")),
                    kExitBundle);
  }
  if (got->status != 200 && got->status != 206 && got->status != 416) {
    close(fd);
    unlink(part.c_str());
    return RegistryError(absl::StrCat("registry ", ref.host, " answered HTTP ", got->status, " to ", r.what));
  }
  // Check the whole file: its size and digest.
  Sha256 sha;
  std::string buf(1 << 20, '\0');
  uint64_t total = 0;
  ssize_t n;
  off_t pos = 0;
  while ((n = pread(fd, buf.data(), buf.size(), pos)) > 0) {
    sha.Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
    total += static_cast<uint64_t>(n);
    pos += n;
  }
  std::string digest = "sha256:" + sha.HexDigest();
  if (total != d.size || digest != d.digest) {
    close(fd);
    unlink(part.c_str());
    return Hostile(ref, total != d.size ? absl::StrCat("blob ", d.digest, " is ", total, " bytes, not ", d.size)
                                        : absl::StrCat("blob ", d.digest, " has the digest ", digest));
  }
  if (rename(part.c_str(), final_path.c_str()) != 0) {
    std::string e = std::strerror(errno);
    close(fd);
    unlink(part.c_str());
    return StoreError(absl::StrCat("cannot write ", final_path, ": ", e));
  }
  close(fd);
  *fetched = true;
  oci::RememberRepository(final_path, ref);
  return absl::OkStatus();
}

// bundle.json as a whole zstd tar: the first part of the bundle UnpackBundle reads.
absl::StatusOr<std::string> HeadPart(const std::string& bundle_json) {
  std::string out;
  ZstdSink sink;
  sink.out = [&](absl::string_view chunk) {
    out.append(chunk.data(), chunk.size());
    return true;
  };
  sink.cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(sink.cctx, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(sink.cctx, ZSTD_c_checksumFlag, 1);
  struct archive* a = NewTarWriter(&sink);
  bool ok = WriteFixedHeader(a, kBundleManifestName, AE_IFREG, 0644, bundle_json.size()) == ARCHIVE_OK &&
            archive_write_data(a, bundle_json.data(), bundle_json.size()) >= 0;
  ok = archive_write_close(a) == ARCHIVE_OK && ok;
  archive_write_free(a);
  ok = ok && sink.Finish();
  ZSTD_freeCCtx(sink.cctx);
  if (!ok) return absl::InternalError("cannot write the bundle.json part");
  return out;
}

}  // namespace

absl::StatusOr<std::vector<BundleCandidate>> ListOciSource(const std::string& location, const std::string& source) {
  absl::StatusOr<OciReference> ref = ParseOciReference(location);
  if (!ref.ok()) return WithExit(ref.status(), kExitBundle);
  Client client(*ref, false);
  absl::StatusOr<Response> got = oci::GetManifest(client, ref->digest.empty() ? ref->tag : ref->digest, ref->digest);
  if (!got.ok()) return got.status();
  nlohmann::json doc = nlohmann::json::parse(got->body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return Hostile(*ref, "the manifest at the tag is not a JSON object");
  std::vector<BundleCandidate> out;
  auto add = [&](const std::string& digest, const nlohmann::json& annotations) {
    BundleCandidate c;
    OciReference at = *ref;
    at.digest = digest;
    c.location = at.ToString();
    c.source = source;
    absl::StatusOr<nlohmann::json> m = oci::BundleManifestFromAnnotations(annotations);
    if (m.ok()) {
      c.manifest = *m;
    } else {
      c.rejected = std::string(m.status().message());
    }
    out.push_back(std::move(c));
  };
  if (const nlohmann::json* manifests = Field(doc, "manifests")) {
    if (!manifests->is_array()) return Hostile(*ref, "the index's manifests is not a list");
    if (manifests->size() > 1000) return Hostile(*ref, "the index lists more than 1000 manifests");
    for (const auto& entry : *manifests) {
      const nlohmann::json* digest = Field(entry, "digest");
      if (!digest || !digest->is_string() || !oci::IsDigest(digest->get<std::string>())) {
        return Hostile(*ref, "an index entry has no sha256 digest");
      }
      const nlohmann::json* mt = Field(entry, "mediaType");
      if (mt && mt->is_string() && mt->get<std::string>() != oci::kManifestType) continue;  // not ours
      const nlohmann::json* annotations = Field(entry, "annotations");
      add(digest->get<std::string>(), annotations ? *annotations : nlohmann::json());
    }
    return out;
  }
  if (Field(doc, "layers")) {
    const nlohmann::json* annotations = Field(doc, "annotations");
    add(oci::DigestOf(got->body), annotations ? *annotations : nlohmann::json());
    return out;
  }
  return Hostile(*ref, "the tag names neither an image index nor a manifest");
}

absl::StatusOr<std::string> FetchOciBundle(const Store& store, const BundleCandidate& candidate, Progress& progress) {
  absl::StatusOr<OciReference> parsed = ParseOciReference(candidate.location);
  if (!parsed.ok()) return WithExit(parsed.status(), kExitBundle);
  const OciReference& ref = *parsed;
  if (ref.digest.empty()) return RegistryError(absl::StrCat(ref.ToString(), ": no manifest digest to fetch"));
  Client client(ref, false);
  progress.Step(absl::StrCat("fetching ", ref.ToString()));
  absl::StatusOr<Response> got = oci::GetManifest(client, ref.digest, ref.digest);
  if (!got.ok()) return got.status();
  nlohmann::json manifest = nlohmann::json::parse(got->body, nullptr, false);
  if (manifest.is_discarded() || !manifest.is_object()) return Hostile(ref, "the manifest is not a JSON object");
  const nlohmann::json* config_json = Field(manifest, "config");
  const nlohmann::json* layers_json = Field(manifest, "layers");
  if (!config_json || !layers_json || !layers_json->is_array() || layers_json->empty()) {
    return Hostile(ref, "the manifest has no config or no layers");
  }
  if (layers_json->size() > 100000) return Hostile(ref, "the manifest lists more than 100000 layers");
  absl::StatusOr<Descriptor> config = ParseDescriptor(ref, *config_json, oci::kConfigType, "config");
  if (!config.ok()) return config.status();
  if (config->size > bundle_internal::kMaxManifestBytes) {
    return Hostile(ref, absl::StrCat("its bundle.json claims ", config->size, " bytes (more than 64 MiB)"));
  }
  std::vector<Descriptor> layers;
  uint64_t total = 0;
  for (const auto& l : *layers_json) {
    absl::StatusOr<Descriptor> d = ParseDescriptor(ref, l, oci::kLayerType, "layer");
    if (!d.ok()) return d.status();
    total += d->size;
    layers.push_back(*d);
  }
  absl::StatusOr<uint64_t> bound = EnvBytes("INFERENCEUTILS_BUNDLE_MAX_BYTES", kDefaultBundleMaxBytes);
  if (!bound.ok()) return bound.status();
  if (total > *bound) {
    return Hostile(ref, absl::StrCat("its layers claim ", total, " bytes, more than the bound of ", *bound,
                                     " bytes (INFERENCEUTILS_BUNDLE_MAX_BYTES)"));
  }

  // bundle.json, checked against its digest and against what the index said about it.
  Request cr;
  cr.url = "/blobs/" + config->digest;
  cr.max_bytes = config->size;
  cr.what = "bundle.json (" + config->digest + ")";
  absl::StatusOr<Response> config_got = client.Send(cr);
  if (!config_got.ok()) return config_got.status();
  if (config_got->status != 200) {
    return RegistryError(absl::StrCat("registry ", ref.host, " answered HTTP ", config_got->status, " to ", cr.what));
  }
  if (oci::DigestOf(config_got->body) != config->digest) {
    return Hostile(ref, absl::StrCat("bundle.json has the digest ", oci::DigestOf(config_got->body), ", not ",
                                     config->digest));
  }
  nlohmann::json bundle = nlohmann::json::parse(config_got->body, nullptr, false);
  if (bundle.is_discarded() || !bundle.is_object()) return Hostile(ref, "its bundle.json is not a JSON object");
  for (const char* field : {"key", "backend", "profile_key", "requires", "key_inputs"}) {
    const nlohmann::json* mine = Field(bundle, field);
    const nlohmann::json* said = Field(candidate.manifest, field);
    if (!mine || !said || *mine != *said) {
      return Hostile(ref, absl::StrCat("the index's annotations say another ", field, " than its bundle.json"));
    }
  }

  std::string blobs = store.root() + "/blobs";
  std::string parts_dir = store.root() + "/cache/oci";
  if (auto s = MakeDirs(blobs + "/sha256", "set INFERENCEUTILS_HOME to a writable directory"); !s.ok()) return s;
  if (auto s = MakeDirs(parts_dir, "set INFERENCEUTILS_HOME to a writable directory"); !s.ok()) return s;
  std::vector<std::string> fetched_now;
  auto forget = [&] {
    for (const auto& p : fetched_now) {
      unlink(p.c_str());
      unlink((p + ".repos").c_str());
    }
  };
  std::string list = "iu-bundle-parts 1\n";
  static std::atomic<int> counter{0};
  std::string stem = absl::StrCat(parts_dir, "/", getpid(), ".", counter++);
  int index = 0, cached = 0;
  uint64_t fetched_bytes = 0;
  for (const Descriptor& d : layers) {
    ++index;
    bool fetched = false;
    if (auto s = FetchBlob(client, d, blobs, progress, &fetched); !s.ok()) {
      forget();
      return s;
    }
    std::string path = absl::StrCat(blobs, "/sha256/", d.digest.substr(7));
    if (fetched) {
      fetched_now.push_back(path);
      fetched_bytes += d.size;
    } else {
      ++cached;
    }
    // A blob fetched now goes again if the bundle is refused: the store is left as it was.
    absl::StrAppend(&list, fetched ? "new " : "keep ", path, "\n");
  }
  progress.Note(absl::StrCat(ref.ToString(), ": ", layers.size() - cached, " layers fetched (",
                             fetched_bytes >> 20, " MiB), ", cached, " from the blob cache"));
  absl::StatusOr<std::string> head = HeadPart(config_got->body);
  if (!head.ok()) {
    forget();
    return head.status();
  }
  std::string head_path = stem + ".head.tar.zst";
  if (auto s = WriteFileAtomic(head_path, *head); !s.ok()) {
    forget();
    return s;
  }
  list = absl::StrCat("iu-bundle-parts 1\ndiscard ", head_path, "\n", list.substr(std::string("iu-bundle-parts 1\n").size()));
  std::string list_path = stem + ".parts";
  if (auto s = WriteFileAtomic(list_path, list); !s.ok()) {
    unlink(head_path.c_str());
    forget();
    return s;
  }
  progress.Finish();
  return list_path;
}

}  // namespace iu
