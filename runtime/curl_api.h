// libcurl, opened with dlopen on first use (a start that downloads nothing never loads it and its
// ~35 dependencies): the few functions the bundle downloads and the index probes call.
#pragma once

#include <curl/curl.h>

#include <string>

namespace iu {

struct CurlApi {
  CURLcode (*global_init)(long);
  CURL* (*easy_init)();
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...);
  CURLcode (*easy_perform)(CURL*);
  CURLcode (*easy_getinfo)(CURL*, CURLINFO, ...);
  void (*easy_cleanup)(CURL*);
  const char* (*easy_strerror)(CURLcode);
  curl_slist* (*slist_append)(curl_slist*, const char*);  // request headers (the OCI client)
  void (*slist_free_all)(curl_slist*);
};

// libcurl.so.4, loaded and initialised once; nullptr with `error` set ("cannot load libcurl.so.4
// (...)", "libcurl.so.4 lacks ...") when it cannot be had.
const CurlApi* LoadCurl(std::string* error);

}  // namespace iu
