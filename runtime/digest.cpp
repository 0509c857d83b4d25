// OpenSSL 3 marks SHA256_Init & co. deprecated in favour of EVP, whose set-up is what the warm
// path cannot afford (see digest.h). They remain supported through OpenSSL 3.x.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "inferenceutils/digest.h"

#include <openssl/sha.h>

namespace iu {
namespace {

std::string Hex(const unsigned char* bytes, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

}  // namespace

Sha256::Sha256() : state_(new SHA256_CTX) { SHA256_Init(static_cast<SHA256_CTX*>(state_)); }
Sha256::~Sha256() { delete static_cast<SHA256_CTX*>(state_); }

void Sha256::Update(absl::string_view data) {
  SHA256_Update(static_cast<SHA256_CTX*>(state_), data.data(), data.size());
}

std::string Sha256::HexDigest() {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256_Final(digest, static_cast<SHA256_CTX*>(state_));
  return Hex(digest, sizeof(digest));
}

std::string Sha256Hex(absl::string_view data) {
  Sha256 sha;
  sha.Update(data);
  return sha.HexDigest();
}

}  // namespace iu
