// Linked into the launcher only when it links Debian's static libarchive (CMakeLists.txt).
//
// libarchive 3.6's pax writer calls __archive_write_entry_filetype_unsupported(), which lives in
// archive_write_set_format.o next to the table of every writer format; pulling that object in
// drags 7-Zip, XAR, ISO 9660, ZIP ... and with them liblzma, libbz2, libxml2 (ICU), nettle and
// zlib into the link. Defining the function here (same signature and behaviour: an error for a
// file type the format cannot store) keeps the launcher to the tar code it uses. Later libarchive
// releases moved the function into its own object (archive_write_set_format_private.c).
#include <archive.h>
#include <archive_entry.h>
#include <cerrno>

// archive.h has no public name for libarchive's ARCHIVE_ERRNO_FILE_FORMAT (EFTYPE, else EINVAL).
constexpr int kFileFormatErrno = EINVAL;

extern "C" void __archive_write_entry_filetype_unsupported(struct archive* a, struct archive_entry* entry,
                                                           const char* format) {
  archive_set_error(a, kFileFormatErrno, "%s: %s format cannot archive file type %o",
                    archive_entry_pathname(entry), format, static_cast<unsigned>(archive_entry_filetype(entry)));
}
