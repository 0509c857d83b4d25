#include "stream_writers.h"

#include <archive_entry.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace iu {

bool HashingWriter::Write(absl::string_view data) {
  sha.Update(data);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = std::strerror(errno);
      return false;
    }
    off += static_cast<size_t>(n);
  }
  written += data.size();
  return true;
}

bool ZstdSink::Start(int level, int workers) {
  cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  size_t set = ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, workers < 1 ? 1 : workers);
  if (ZSTD_isError(set)) {
    error = absl::StrCat("the zstd library has no multi-threading (", ZSTD_getErrorName(set),
                         "); link inferenceutils against a libzstd built with it (Debian's libzstd.so.1)");
    return false;
  }
  return true;
}

void ZstdSink::WriteTo(HashingWriter* file) {
  out = [this, file](absl::string_view chunk) {
    if (!file->Write(chunk)) error = file->error;
    return file->error.empty();
  };
}

bool ZstdSink::Emit(const void* data, size_t length, ZSTD_EndDirective mode) {
  if (buffer_.empty()) buffer_.resize(ZSTD_CStreamOutSize() * 4);
  ZSTD_inBuffer in{data, length, 0};
  for (;;) {
    ZSTD_outBuffer ob{buffer_.data(), buffer_.size(), 0};
    size_t left = ZSTD_compressStream2(cctx, &ob, &in, mode);
    if (ZSTD_isError(left)) {
      error = ZSTD_getErrorName(left);
      return false;
    }
    if (ob.pos > 0) {
      if (!out(absl::string_view(buffer_.data(), ob.pos))) {
        if (error.empty()) error = "cannot write the compressed stream";
        return false;
      }
      size += ob.pos;
    }
    if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) return true;
  }
}

la_ssize_t ZstdSink::ArchiveWrite(struct archive*, void* sink, const void* data, size_t size) {
  return static_cast<ZstdSink*>(sink)->Emit(data, size, ZSTD_e_continue) ? static_cast<la_ssize_t>(size) : -1;
}

struct archive* NewTarWriter(ZstdSink* sink) {
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_set_bytes_per_block(a, 1 << 20);  // large writes into zstd: fewer, cheaper calls
  archive_write_set_bytes_in_last_block(a, 1);
  archive_write_open2(a, sink, nullptr, ZstdSink::ArchiveWrite, nullptr, nullptr);
  return a;
}

int WriteFixedHeader(struct archive* a, const std::string& path, int type, int mode, uint64_t size,
                     const std::string& symlink_target) {
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, path.c_str());
  archive_entry_set_filetype(e, static_cast<unsigned>(type));
  archive_entry_set_perm(e, static_cast<mode_t>(mode));
  archive_entry_set_size(e, type == AE_IFREG ? static_cast<la_int64_t>(size) : 0);
  archive_entry_set_mtime(e, kFixedMtime, 0);
  archive_entry_set_uid(e, 0);
  archive_entry_set_gid(e, 0);
  if (type == AE_IFLNK) archive_entry_set_symlink(e, symlink_target.c_str());
  int rc = archive_write_header(a, e);
  archive_entry_free(e);
  return rc;
}

}  // namespace iu
