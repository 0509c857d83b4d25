// SHA-256 for keys, fingerprints and file hashes. Uses OpenSSL's direct SHA-256 functions, not
// the EVP interface: EVP's first use loads openssl.cnf and the provider tables, which cost
// milliseconds on the launcher's warm path.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace iu {

// Lower-case hex SHA-256 of `data` (64 digits).
std::string Sha256Hex(absl::string_view data);

// Incremental form, for streams.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::string_view data);
  std::string HexDigest();  // ends the stream

 private:
  void* state_;
};

}  // namespace iu
