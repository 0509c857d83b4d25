// Private helpers of hardware detection: reading small files through the detection root.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "inferenceutils/hardware.h"

namespace iu::detect {

// `path` (absolute) under options.root.
std::string Rooted(const DetectOptions& options, const std::string& path);

// Reads at most `limit` bytes. False with `error` ("cannot read X: reason") when unreadable.
bool ReadSmallFile(const std::string& path, std::string* out, std::string* error = nullptr,
                   size_t limit = 1 << 20);
// The file's first line, trimmed; "" when unreadable.
std::string ReadLine(const std::string& path);

std::string Trim(const std::string& s);
std::string EnvOf(const DetectOptions& options, const std::string& name);
bool IsExecutableFile(const std::string& path);
// First `name` on options.env PATH (each entry under root); "" when absent.
std::string FindOnPath(const DetectOptions& options, const std::string& name);
// "key<sep>value" lines → value of the first `key`, trimmed.
std::string FieldOf(const std::string& text, const std::string& key, char sep);
// Non-negative integer parse; false on garbage.
bool ParseU64(const std::string& s, uint64_t* out);
// Names in a directory (no . and ..), sorted; empty when unreadable.
std::vector<std::string> ListDir(const std::string& dir);

// Part detectors (each fills its part of `facts` and notes what failed).
void DetectCpu(const DetectOptions& options, Facts& facts);
void DetectSystem(const DetectOptions& options, Facts& facts);  // memory, OS, libc, Python
void DetectNvidia(const DetectOptions& options, Facts& facts);
void DetectRocm(const DetectOptions& options, Facts& facts);
void DetectApple(const DetectOptions& options, Facts& facts);
void DetectVulkan(const DetectOptions& options, Facts& facts);
void DetectTools(const DetectOptions& options, Facts& facts);

}  // namespace iu::detect
