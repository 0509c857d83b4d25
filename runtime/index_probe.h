// Asking package indexes, once and in parallel, whether they answer and what they list for one
// project: the prebuilt wheel indexes before pip runs (an unreachable one costs a short timeout
// instead of pip's retries), and every network source after a failed pip run (to name which
// could not be reached and why). Not a public interface.
#pragma once

#include <string>
#include <vector>

namespace iu {

struct ProbeOptions {
  std::string cert;         // pip's cert: a CA bundle (file) or directory
  std::string client_cert;  // pip's client-cert: PEM with the key
  std::string proxy;        // pip's proxy option; "" = the *_proxy variables, as pip does
  std::vector<std::string> trusted_hosts;  // host or host:port: TLS not verified
  long timeout_s = 10;      // the whole request; connecting gets at most 5 s
};

struct ProbeTarget {
  std::string url;     // an index (simple API root), a find-links page or directory
  bool index = true;   // true: <url>/<project>/ is asked; false: the page itself
};

struct ProbeResult {
  std::string url;
  // "ok", "missing" (answered: no page for the project), "dns", "refused", "connect",
  // "timeout", "proxy", "tls", "http" (another HTTP error), "error".
  std::string kind;
  std::string why;                 // for people: "the name 'x' does not resolve (DNS)", ...
  std::vector<std::string> files;  // distribution files the page lists for the project
  bool reachable() const { return kind == "ok" || kind == "missing"; }
};

// One result per target, in order. file:// URLs and paths are read from the disk.
std::vector<ProbeResult> ProbeSources(const std::vector<ProbeTarget>& targets, const std::string& project,
                                      const ProbeOptions& options);

// The version in a wheel or sdist file name ("llama_cpp_python-0.3.98-cp311-...whl" → "0.3.98").
std::string DistributionVersion(const std::string& filename);

// A network failure in pip's output (its "Retrying ... after connection broken by" or
// "Could not fetch URL" lines), as a kind and a reason; kind "" when there is none.
struct PipNetworkError {
  std::string kind, why;
};
PipNetworkError PipNetworkErrorIn(const std::string& output);

}  // namespace iu
