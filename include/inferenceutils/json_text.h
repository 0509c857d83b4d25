// Text for JSON (and Python source) from values that may hold any bytes: paths, environment
// variables, file names and command-line arguments are bytes on Linux, JSON is UTF-8, and
// nlohmann::json throws (uncaught: the process aborts) when it serialises a string that is not
// valid UTF-8.
//
// Every JSON document the launcher writes or prints goes through DumpJson: invalid UTF-8 becomes
// U+FFFD there, at the one step that can fail, while values in memory keep their bytes (a path
// with such bytes still opens, a variable still reaches the child). The replacement is lossy:
// JSON written this way shows such a string but cannot give its bytes back, so nothing reads a
// path back from JSON to open it (a manifest's prefix is where it was found, not what it says).
// Python source made by the launcher embeds strings with PythonStr, which keeps every byte.
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace iu {

// j.dump(indent), with invalid UTF-8 replaced by U+FFFD instead of throwing.
std::string DumpJson(const nlohmann::json& j, int indent = -1);

// `text` with every invalid UTF-8 sequence replaced by U+FFFD (valid text comes back unchanged).
std::string ValidUtf8(const std::string& text);

// A Python str literal ("...") for `text`, lossless: bytes that are not UTF-8 become the lone
// surrogates of os.fsdecode (\udcXX), so os.fsencode / open() give the same bytes back.
std::string PythonStr(const std::string& text);

}  // namespace iu
