# Provides the imported target mtlsd::boringssl (ssl + crypto) in one of three ways,
# chosen with MTLSD_BORINGSSL:
#   source  (default) the pinned tree from scripts/fetch-boringssl.sh, compiled here as
#           static libraries with the x86-64/aarch64 assembly and without OPENSSL_SMALL;
#   system  Debian's android-libboringssl-dev (/usr/include/android, shared libraries
#           under /usr/lib/<multiarch>/android, linked with an rpath);
#   root    BORINGSSL_ROOT=<dir>: a user's own BoringSSL build or install tree.
# There is never a fallback to OpenSSL: the wrong library would link and behave
# differently at run time, which is worse than a failed configure.

set(MTLSD_BORINGSSL "source" CACHE STRING "Where BoringSSL comes from: source, system or root")
set_property(CACHE MTLSD_BORINGSSL PROPERTY STRINGS source system root)
set(MTLSD_BORINGSSL_SOURCE_DIR "${PROJECT_SOURCE_DIR}/.deps/boringssl" CACHE PATH
    "The tree scripts/fetch-boringssl.sh unpacked (MTLSD_BORINGSSL=source)")
set(BORINGSSL_ROOT "" CACHE PATH "A BoringSSL build or install tree (MTLSD_BORINGSSL=root)")

add_library(mtlsd_boringssl INTERFACE)
add_library(mtlsd::boringssl ALIAS mtlsd_boringssl)

if(MTLSD_BORINGSSL STREQUAL "source")
  set(_bssl "${MTLSD_BORINGSSL_SOURCE_DIR}")
  if(NOT EXISTS "${_bssl}/android-sources.cmake")
    message(FATAL_ERROR
      "BoringSSL source not found in ${_bssl}.\n"
      "Run scripts/fetch-boringssl.sh (tests/run.sh and deploy/local/demo.sh do), or choose "
      "-DMTLSD_BORINGSSL=system (apt-get install android-libboringssl-dev) or "
      "-DMTLSD_BORINGSSL=root -DBORINGSSL_ROOT=<your BoringSSL tree>.")
  endif()
  file(READ "${_bssl}/BORINGSSL_REVISION" MTLSD_BORINGSSL_REVISION)
  string(STRIP "${MTLSD_BORINGSSL_REVISION}" MTLSD_BORINGSSL_REVISION)

  enable_language(CXX)
  enable_language(ASM)
  set(BORINGSSL_ROOT_SAVED "${BORINGSSL_ROOT}")
  set(BORINGSSL_ROOT "${_bssl}/")
  include("${_bssl}/android-sources.cmake")
  set(BORINGSSL_ROOT "${BORINGSSL_ROOT_SAVED}")

  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    set(_asm ${crypto_sources_linux_x86_64})
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
    set(_asm ${crypto_sources_linux_aarch64})
  else()
    set(_asm "")
    message(WARNING "No BoringSSL assembly for ${CMAKE_SYSTEM_PROCESSOR}: building the slow C fallbacks")
  endif()

  # BoringSSL is compiled with its own flags, never with mtlsd's warnings or sanitizers:
  # it is tested upstream, and an uninstrumented copy keeps the sanitized test build fast.
  set(_bssl_defs BORINGSSL_IMPLEMENTATION _XOPEN_SOURCE=700)
  if(NOT _asm)
    list(APPEND _bssl_defs OPENSSL_NO_ASM)
  endif()
  # Function and data sections let the linker drop what mtlsd never calls (DTLS, ECH,
  # legacy ciphers): a smaller binary and fewer resident pages in every pod.
  set(_bssl_opts -O2 -fvisibility=hidden -fno-common -ffunction-sections -fdata-sections -w)
  # Except ThreadSanitizer: the TLS contexts are shared by the workers, and references
  # taken and dropped in code it cannot see would read as races in mtlsd's.
  if(MTLSD_SANITIZE MATCHES "thread")
    list(APPEND _bssl_opts -fsanitize=thread)
  endif()
  # And the fuzz tree: the certificate-set driver feeds BoringSSL's PEM, ASN.1 and X.509
  # parsers, whose coverage must guide libFuzzer too.
  if(MTLSD_FUZZ)
    list(APPEND _bssl_opts -fsanitize=fuzzer-no-link)
  endif()

  add_library(bssl_crypto STATIC ${crypto_sources} ${_asm})
  add_library(bssl_ssl STATIC ${ssl_sources})
  foreach(_t bssl_crypto bssl_ssl)
    target_include_directories(${_t} SYSTEM PUBLIC "${_bssl}/src/include")
    target_compile_definitions(${_t} PRIVATE ${_bssl_defs})
    target_compile_options(${_t} PRIVATE ${_bssl_opts})
    set_target_properties(${_t} PROPERTIES C_STANDARD 11 CXX_STANDARD 14
                                           POSITION_INDEPENDENT_CODE ON)
  endforeach()
  target_compile_options(bssl_ssl PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fno-exceptions -fno-rtti>)
  target_link_libraries(bssl_ssl PUBLIC bssl_crypto)
  find_package(Threads REQUIRED)
  target_link_libraries(bssl_crypto PUBLIC Threads::Threads)

  # The bssl command-line tool, for `bssl speed` in the benchmark; not built by default.
  add_executable(bssl EXCLUDE_FROM_ALL ${tool_sources})
  target_compile_definitions(bssl PRIVATE ${_bssl_defs})
  target_compile_options(bssl PRIVATE ${_bssl_opts})
  set_target_properties(bssl PROPERTIES CXX_STANDARD 14)
  target_link_libraries(bssl PRIVATE bssl_ssl)

  target_link_libraries(mtlsd_boringssl INTERFACE bssl_ssl)
  # ssl is C++: its static archive needs the C++ runtime when a C program links it.
  target_link_libraries(mtlsd_boringssl INTERFACE stdc++)
  set(MTLSD_BORINGSSL_DESCRIPTION "BoringSSL ${MTLSD_BORINGSSL_REVISION} (Debian source, static)")

elseif(MTLSD_BORINGSSL STREQUAL "system")
  set(_inc /usr/include/android)
  find_library(_bssl_ssl NAMES ssl PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/android NO_DEFAULT_PATH)
  find_library(_bssl_crypto NAMES crypto PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/android NO_DEFAULT_PATH)
  if(NOT EXISTS "${_inc}/openssl/base.h" OR NOT _bssl_ssl OR NOT _bssl_crypto)
    message(FATAL_ERROR "Debian's BoringSSL not found: apt-get install android-libboringssl-dev")
  endif()
  target_include_directories(mtlsd_boringssl SYSTEM INTERFACE "${_inc}")
  target_link_libraries(mtlsd_boringssl INTERFACE "${_bssl_ssl}" "${_bssl_crypto}")
  get_filename_component(_dir "${_bssl_ssl}" DIRECTORY)
  target_link_options(mtlsd_boringssl INTERFACE "-Wl,-rpath,${_dir}")
  set(MTLSD_BORINGSSL_DESCRIPTION "BoringSSL (Debian android-libboringssl, shared)")

elseif(MTLSD_BORINGSSL STREQUAL "root")
  if(NOT BORINGSSL_ROOT)
    message(FATAL_ERROR "-DMTLSD_BORINGSSL=root needs -DBORINGSSL_ROOT=<BoringSSL build or install tree>")
  endif()
  find_path(_bssl_inc openssl/base.h PATHS "${BORINGSSL_ROOT}/include" NO_DEFAULT_PATH)
  find_library(_bssl_ssl NAMES ssl PATHS "${BORINGSSL_ROOT}/lib" "${BORINGSSL_ROOT}/build"
               "${BORINGSSL_ROOT}/build/ssl" "${BORINGSSL_ROOT}/ssl" NO_DEFAULT_PATH)
  find_library(_bssl_crypto NAMES crypto PATHS "${BORINGSSL_ROOT}/lib" "${BORINGSSL_ROOT}/build"
               "${BORINGSSL_ROOT}/build/crypto" "${BORINGSSL_ROOT}/crypto" NO_DEFAULT_PATH)
  if(NOT _bssl_inc OR NOT _bssl_ssl OR NOT _bssl_crypto)
    message(FATAL_ERROR "No BoringSSL in ${BORINGSSL_ROOT}: expected include/openssl/base.h and "
                        "libssl/libcrypto under lib/, build/ or build/{ssl,crypto}/")
  endif()
  target_include_directories(mtlsd_boringssl SYSTEM INTERFACE "${_bssl_inc}")
  target_link_libraries(mtlsd_boringssl INTERFACE "${_bssl_ssl}" "${_bssl_crypto}" stdc++ pthread)
  get_filename_component(_dir "${_bssl_ssl}" DIRECTORY)
  target_link_options(mtlsd_boringssl INTERFACE "-Wl,-rpath,${_dir}")
  set(MTLSD_BORINGSSL_DESCRIPTION "BoringSSL (${BORINGSSL_ROOT})")

else()
  message(FATAL_ERROR "MTLSD_BORINGSSL must be source, system or root, not '${MTLSD_BORINGSSL}'")
endif()

message(STATUS "mtlsd uses ${MTLSD_BORINGSSL_DESCRIPTION}")
