#include "curl_api.h"

#include <dlfcn.h>

#include <mutex>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace iu {

const CurlApi* LoadCurl(std::string* error) {
  static CurlApi api;
  static std::string load_error;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      load_error = absl::StrCat("cannot load libcurl.so.4 (", dlerror(), ")");
      return;
    }
    auto bind = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (!fn && load_error.empty()) load_error = absl::StrCat("libcurl.so.4 lacks ", name);
    };
    bind(api.global_init, "curl_global_init");
    bind(api.easy_init, "curl_easy_init");
    bind(api.easy_setopt, "curl_easy_setopt");
    bind(api.easy_perform, "curl_easy_perform");
    bind(api.easy_getinfo, "curl_easy_getinfo");
    bind(api.easy_cleanup, "curl_easy_cleanup");
    bind(api.easy_strerror, "curl_easy_strerror");
    bind(api.slist_append, "curl_slist_append");
    bind(api.slist_free_all, "curl_slist_free_all");
    if (load_error.empty()) api.global_init(CURL_GLOBAL_DEFAULT);
  });
  *error = load_error;
  return load_error.empty() ? &api : nullptr;
}

}  // namespace iu
