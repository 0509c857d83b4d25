// Writers shared by the bundle packer and the app builder (not a public interface): a file
// writer that hashes what it writes, and the zstd stream libarchive writes tar blocks into.
#pragma once

#include <archive.h>
#include <zstd.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/strings/string_view.h"
#include "inferenceutils/digest.h"

namespace iu {

// Writes every byte of each chunk to `fd` (retrying EINTR), counting and hashing it.
struct HashingWriter {
  int fd = -1;
  uint64_t written = 0;
  Sha256 sha;
  std::string error;  // strerror of the failed write

  bool Write(absl::string_view data);
};

// Compresses what goes in with `cctx` and hands each compressed chunk to `out`. Give it to
// libarchive with archive_write_open2(a, &sink, nullptr, ZstdSink::ArchiveWrite, ...), then call
// Finish() after archive_write_close().
struct ZstdSink {
  ZSTD_CCtx* cctx = nullptr;
  std::function<bool(absl::string_view)> out;  // false: stop (set `error` first, or it says so)
  uint64_t size = 0;                            // compressed bytes handed to `out`
  std::string error;

  // A compression context at `level` with a checksum and `workers` (>= 1) threads: zstd's
  // multi-threaded output does not depend on the count, so the bytes are the same on any machine.
  // False (and `error`) when this libzstd has no multi-threading.
  bool Start(int level, int workers);
  // Sends the compressed chunks to `file` (its write error stops the stream).
  void WriteTo(HashingWriter* file);
  bool Emit(const void* data, size_t size, ZSTD_EndDirective mode);
  bool Finish() { return Emit(nullptr, 0, ZSTD_e_end); }
  static la_ssize_t ArchiveWrite(struct archive*, void* sink, const void* data, size_t size);

 private:
  std::string buffer_;
};

// A pax tar writer into `sink`: 1 MiB writes, no padding after the last block.
struct archive* NewTarWriter(ZstdSink* sink);

// Every member of a bundle or an app archive has this mtime (2024-01-01T00:00:00Z) and owner 0:0.
constexpr int64_t kFixedMtime = 1704067200;

// Writes a member's header with the fixed owner and mtime (the same bytes on every machine);
// `symlink_target` for AE_IFLNK. Returns libarchive's status.
int WriteFixedHeader(struct archive* a, const std::string& path, int type, int mode, uint64_t size,
                     const std::string& symlink_target = "");

}  // namespace iu
