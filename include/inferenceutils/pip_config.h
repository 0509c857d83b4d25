// The machine's pip set-up, read as pip itself reads it: the configuration files
// ($XDG_CONFIG_DIRS/pip/pip.conf, /etc/pip.conf, ~/.pip/pip.conf, $XDG_CONFIG_HOME/pip/pip.conf,
// $PIP_CONFIG_FILE; `PIP_CONFIG_FILE=/dev/null` reads none), their [global] and [install]
// sections, then the PIP_* variables. No process is started: this runs on the warm path.
//
// Two kinds of settings come out of it:
// - where packages come from (index-url, extra-index-url, find-links, trusted-host): defaults
//   below the spec, the command line and INFERENCEUTILS_* (runtime/spec.cpp), part of the key;
// - how to connect (cert, client-cert, proxy, timeout, retries): given to every pip run (as
//   PIP_* variables) and to the launcher's own index probes, never part of the key.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace iu {

struct PipSetting {
  std::string value;
  std::string origin;  // "PIP_INDEX_URL", "/etc/pip.conf [global]", ...
};

struct PipConfig {
  PipSetting index_url;                      // value "" = not set
  std::vector<PipSetting> extra_index_urls;  // whitespace-separated lists, as pip splits them
  std::vector<PipSetting> find_links;        // relative paths made absolute (current directory)
  std::vector<PipSetting> trusted_hosts;
  // Connection-only: "cert", "client-cert", "proxy", "timeout", "retries" (pip's option names).
  std::map<std::string, PipSetting> connection;
  std::vector<std::string> files;  // the configuration files read, in pip's order

  // The PIP_* variables that give pip the connection settings (PIP_CERT=..., PIP_TIMEOUT=...).
  std::map<std::string, std::string> ConnectionEnv() const;
};

// From an explicit environment (tests) and the files it names.
PipConfig ReadPipConfig(const std::map<std::string, std::string>& env);
// From the process environment.
PipConfig PipConfigFromEnv();

}  // namespace iu
