// OCI registries: references, auth challenges, docker config credentials, annotations (the
// unit part; pushing and pulling against a real registry is tests/e2e/test_oci.py).
#include <cstdlib>

#include "doctest/doctest.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/oci.h"
#include "oci/oci_internal.h"

namespace iu {
namespace {

TEST_CASE("oci references: host, port, repository, tag, digest") {
  auto r = ParseOciReference("oci://registry.example.com/team/llama:cuda-12");
  REQUIRE(r.ok());
  CHECK(r->host == "registry.example.com");
  CHECK(r->repository == "team/llama");
  CHECK(r->tag == "cuda-12");
  CHECK(r->digest.empty());
  CHECK_FALSE(r->plain_http);
  CHECK(r->BaseUrl() == "https://registry.example.com/v2/team/llama");

  auto local = ParseOciReference("oci://127.0.0.1:5000/rt");
  REQUIRE(local.ok());
  CHECK(local->host == "127.0.0.1:5000");
  CHECK(local->tag == "latest");
  CHECK(local->plain_http);
  CHECK(local->BaseUrl() == "http://127.0.0.1:5000/v2/rt");
  CHECK(ParseOciReference("oci://localhost:5000/a/b")->plain_http);
  CHECK(ParseOciReference("oci://[::1]:5000/a")->plain_http);
  CHECK(ParseOciReference("oci://[::1]:5000/a")->host == "[::1]:5000");

  const std::string digest = "sha256:" + std::string(64, 'a');
  auto pinned = ParseOciReference("oci://h:1/a/b:t@" + digest);
  REQUIRE(pinned.ok());
  CHECK(pinned->tag == "t");
  CHECK(pinned->digest == digest);
  CHECK(pinned->ToString() == "oci://h:1/a/b:t@" + digest);
  auto only_digest = ParseOciReference("oci://h/a@" + digest);
  REQUIRE(only_digest.ok());
  CHECK(only_digest->tag.empty());
}

TEST_CASE("oci references: what is refused, and why") {
  for (const char* bad : {"http://h/a", "oci://h", "oci:///a", "oci://h/", "oci://h/A", "oci://h/a:", "oci://h/a:b:c",
                          "oci://h/a//b", "oci://h:port/a", "oci://h/a@sha256:xyz", "oci://h/a@md5:00",
                          "oci://h/-a", "oci://h/a:-t", "oci://h/../a", "oci://h/a b", "oci://h:1:2/a"}) {
    auto r = ParseOciReference(bad);
    INFO(bad);
    CHECK_FALSE(r.ok());
    if (!r.ok()) {
      CHECK(ExitCodeOf(r.status()) == kExitConfig);
      CHECK(std::string(r.status().message()).find("oci://HOST[:PORT]/REPO[:TAG]") != std::string::npos);
    }
  }
}

TEST_CASE("plain http: loopback, or a listed registry") {
  unsetenv("INFERENCEUTILS_INSECURE_REGISTRIES");
  CHECK(PlainHttpAllowed("127.0.0.1:5000"));
  CHECK(PlainHttpAllowed("localhost"));
  CHECK_FALSE(PlainHttpAllowed("10.0.0.5:5000"));
  CHECK_FALSE(PlainHttpAllowed("127.0.0.1.example.com"));
  setenv("INFERENCEUTILS_INSECURE_REGISTRIES", "reg.lan:5000, other", 1);
  CHECK(PlainHttpAllowed("reg.lan:5000"));
  CHECK(PlainHttpAllowed("OTHER"));
  CHECK_FALSE(PlainHttpAllowed("reg.lan"));
  CHECK(ParseOciReference("oci://reg.lan:5000/a")->plain_http);
  unsetenv("INFERENCEUTILS_INSECURE_REGISTRIES");
}

TEST_CASE("WWW-Authenticate: Basic and Bearer challenges") {
  auto basic = oci::ParseWwwAuthenticate("Basic realm=\"basic-realm\"");
  REQUIRE(basic.has_value());
  CHECK(basic->scheme == "basic");
  CHECK(basic->params["realm"] == "basic-realm");

  auto bearer = oci::ParseWwwAuthenticate(
      "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example.com\","
      "scope=\"repository:team/llama:pull,push\"");
  REQUIRE(bearer.has_value());
  CHECK(bearer->scheme == "bearer");
  CHECK(bearer->params["realm"] == "https://auth.example.com/token");
  CHECK(bearer->params["service"] == "registry.example.com");
  CHECK(bearer->params["scope"] == "repository:team/llama:pull,push");

  auto unquoted = oci::ParseWwwAuthenticate("bearer Realm=http://127.0.0.1:1/t, service=reg");
  REQUIRE(unquoted.has_value());
  CHECK(unquoted->params["realm"] == "http://127.0.0.1:1/t");
  CHECK(unquoted->params["service"] == "reg");
  auto escaped = oci::ParseWwwAuthenticate(R"(Bearer realm="a\"b")");
  REQUIRE(escaped.has_value());
  CHECK(escaped->params["realm"] == "a\"b");

  CHECK_FALSE(oci::ParseWwwAuthenticate("").has_value());
  CHECK_FALSE(oci::ParseWwwAuthenticate("Bearer realm=\"unterminated").has_value());
}

TEST_CASE("docker config: auths by host, base64 auth or username/password") {
  const std::string config = R"({"auths": {
      "127.0.0.1:5000": {"auth": ")" + oci::Base64Encode("alice:s3cr:et") + R"("},
      "https://reg.example.com": {"username": "bob", "password": "pw"},
      "https://index.docker.io/v1/": {"auth": ")" + oci::Base64Encode("carol:x") + R"("}},
    "credsStore": "desktop"})";
  auto a = oci::CredentialsFromDockerConfig(config, "127.0.0.1:5000");
  REQUIRE(a.ok());
  REQUIRE(a->has_value());
  CHECK((*a)->username == "alice");
  CHECK((*a)->password == "s3cr:et");
  auto b = oci::CredentialsFromDockerConfig(config, "reg.example.com");
  REQUIRE(b.ok());
  REQUIRE(b->has_value());
  CHECK((*b)->username == "bob");
  auto c = oci::CredentialsFromDockerConfig(config, "index.docker.io");
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK((*c)->username == "carol");
  auto none = oci::CredentialsFromDockerConfig(config, "127.0.0.1:5001");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  CHECK_FALSE(oci::CredentialsFromDockerConfig("{}", "h")->has_value());

  CHECK_FALSE(oci::CredentialsFromDockerConfig("not json", "h").ok());
  CHECK_FALSE(oci::CredentialsFromDockerConfig(R"({"auths": []})", "h").ok());
  CHECK_FALSE(oci::CredentialsFromDockerConfig(R"({"auths": {"h": {"auth": "bm9jb2xvbg=="}}})", "h").ok());  // "nocolon"
  CHECK_FALSE(oci::CredentialsFromDockerConfig(R"({"auths": {"h": {"auth": "***"}}})", "h").ok());
}

TEST_CASE("base64 round trip") {
  for (const std::string& s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", "user:pass", std::string("\0\xff\x10", 3)}) {
    auto back = oci::Base64Decode(oci::Base64Encode(s));
    REQUIRE(back.has_value());
    CHECK(*back == s);
  }
  CHECK(oci::Base64Encode("user:pass") == "dXNlcjpwYXNz");
}

TEST_CASE("annotations carry what selection needs, and a bad one is named") {
  nlohmann::json bundle = {
      {"key", "k1"}, {"backend", "cuda"}, {"profile_key", "cuda-1"}, {"created", "2026-01-01T00:00:00Z"},
      {"key_inputs", {{"requirements", {"llama-cpp-python"}}}},
      {"requires", {{"backend", "cuda"}, {"cpu_isa", "x86-64-v3"}, {"min_glibc", "2.36"},
                    {"python", {{"abi", "cp311"}, {"home", "3.11.2-abc"}}},
                    {"cuda", {{"compute_capabilities", {"8.0", "9.0"}}, {"min_driver_cuda", "12.4"}}}}}};
  nlohmann::json a = oci::AnnotationsFor(bundle);
  CHECK(a["io.inferenceutils.cuda.compute_capabilities"] == "8.0,9.0");
  CHECK(a["io.inferenceutils.cuda.min_driver"] == "12.4");
  CHECK(a["io.inferenceutils.python.home"] == "3.11.2-abc");
  auto back = oci::BundleManifestFromAnnotations(a);
  REQUIRE(back.ok());
  CHECK((*back)["key"] == "k1");
  CHECK((*back)["profile_key"] == "cuda-1");
  CHECK((*back)["requires"] == bundle["requires"]);
  CHECK((*back)["key_inputs"] == bundle["key_inputs"]);

  a["io.inferenceutils.requires"] = "{not json";
  auto bad = oci::BundleManifestFromAnnotations(a);
  REQUIRE_FALSE(bad.ok());
  CHECK(std::string(bad.status().message()).find("io.inferenceutils.requires") != std::string::npos);
  CHECK_FALSE(oci::BundleManifestFromAnnotations(nlohmann::json::object()).ok());
  CHECK_FALSE(oci::BundleManifestFromAnnotations(nlohmann::json::array()).ok());
  CHECK(oci::OciArchitecture("x86_64") == "amd64");
  CHECK(oci::OciArchitecture("aarch64") == "arm64");
}

TEST_CASE("digests") {
  CHECK(oci::IsDigest("sha256:" + std::string(64, '0')));
  CHECK_FALSE(oci::IsDigest("sha256:" + std::string(63, '0')));
  CHECK_FALSE(oci::IsDigest("sha256:" + std::string(64, 'A')));
  CHECK_FALSE(oci::IsDigest("sha512:" + std::string(64, '0')));
  CHECK(oci::DigestOf("") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

}  // namespace
}  // namespace iu
