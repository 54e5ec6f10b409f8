# FindSodium.cmake -- libsodium (Debian: libsodium-dev; it ships a .pc file
# but no CMake package).
#
#   find_package(Sodium 1.0.18 REQUIRED)
#
# Imported target: Sodium::Sodium (library + include dir).
# Variables: Sodium_FOUND, Sodium_VERSION, Sodium_INCLUDE_DIR, Sodium_LIBRARY.
# pkg-config, when there is one, gives the hints; plain find_path/find_library
# do the rest (so a prefix on CMAKE_PREFIX_PATH works without pkg-config).
include(FindPackageHandleStandardArgs)

find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PC_Sodium QUIET libsodium)
endif()

find_path(Sodium_INCLUDE_DIR NAMES sodium.h HINTS ${PC_Sodium_INCLUDEDIR} ${PC_Sodium_INCLUDE_DIRS})
find_library(Sodium_LIBRARY NAMES sodium libsodium HINTS ${PC_Sodium_LIBDIR} ${PC_Sodium_LIBRARY_DIRS})
mark_as_advanced(Sodium_INCLUDE_DIR Sodium_LIBRARY)

if(Sodium_INCLUDE_DIR AND EXISTS "${Sodium_INCLUDE_DIR}/sodium/version.h")
  file(STRINGS "${Sodium_INCLUDE_DIR}/sodium/version.h" _sodium_ver
       REGEX "^#define[ \t]+SODIUM_VERSION_STRING[ \t]+\"[0-9.]+\"")
  string(REGEX REPLACE ".*\"([0-9.]+)\".*" "\\1" Sodium_VERSION "${_sodium_ver}")
  unset(_sodium_ver)
endif()

find_package_handle_standard_args(
  Sodium
  REQUIRED_VARS Sodium_LIBRARY Sodium_INCLUDE_DIR
  VERSION_VAR Sodium_VERSION)

if(Sodium_FOUND AND NOT TARGET Sodium::Sodium)
  add_library(Sodium::Sodium UNKNOWN IMPORTED)
  set_target_properties(Sodium::Sodium PROPERTIES IMPORTED_LOCATION "${Sodium_LIBRARY}"
                                                  INTERFACE_INCLUDE_DIRECTORIES "${Sodium_INCLUDE_DIR}")
endif()
