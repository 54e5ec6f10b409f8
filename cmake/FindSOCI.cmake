# FindSOCI.cmake -- SOCI (Debian's libsoci-dev ships no CMake config and no .pc file).
#
#   find_package(SOCI 4.0 REQUIRED COMPONENTS sqlite3 postgresql)
#
# Components: sqlite3, postgresql (core is always searched and required).
# Imported targets:
#   SOCI::core        libsoci_core + include dir
#   SOCI::sqlite3     libsoci_sqlite3, links SOCI::core and SQLite::SQLite3
#   SOCI::postgresql  libsoci_postgresql, links SOCI::core and libpq (whose include dir,
#                     /usr/include/postgresql on Debian, is needed by soci/postgresql/soci-postgresql.h)
# Variables: SOCI_FOUND, SOCI_VERSION, SOCI_INCLUDE_DIR, SOCI_<comp>_FOUND, SOCI_<comp>_LIBRARY.
include(FindPackageHandleStandardArgs)

find_path(SOCI_INCLUDE_DIR NAMES soci/soci.h)
find_library(SOCI_core_LIBRARY NAMES soci_core)
mark_as_advanced(SOCI_INCLUDE_DIR SOCI_core_LIBRARY)

if(SOCI_INCLUDE_DIR AND EXISTS "${SOCI_INCLUDE_DIR}/soci/version.h")
  file(STRINGS "${SOCI_INCLUDE_DIR}/soci/version.h" _soci_ver
       REGEX "^#define[ \t]+SOCI_VERSION[ \t]+[0-9]+")
  string(REGEX REPLACE ".*SOCI_VERSION[ \t]+([0-9]+).*" "\\1" _soci_ver "${_soci_ver}")
  math(EXPR _soci_major "${_soci_ver} / 100000")
  math(EXPR _soci_minor "${_soci_ver} / 100 % 1000")
  math(EXPR _soci_patch "${_soci_ver} % 100")
  set(SOCI_VERSION "${_soci_major}.${_soci_minor}.${_soci_patch}")
  unset(_soci_ver)
endif()

if(SOCI_core_LIBRARY)
  set(SOCI_core_FOUND TRUE)
endif()

foreach(_comp IN LISTS SOCI_FIND_COMPONENTS)
  if(_comp STREQUAL "core")
    continue()
  elseif(NOT _comp MATCHES "^(sqlite3|postgresql)$")
    message(WARNING "FindSOCI: unsupported component '${_comp}'")
    set(SOCI_${_comp}_FOUND FALSE)
    continue()
  endif()
  find_library(SOCI_${_comp}_LIBRARY NAMES soci_${_comp})
  mark_as_advanced(SOCI_${_comp}_LIBRARY)
  set(SOCI_${_comp}_FOUND FALSE)
  if(_comp STREQUAL "sqlite3")
    find_package(SQLite3 QUIET)              # CMake >= 3.14: SQLite::SQLite3
    if(SOCI_sqlite3_LIBRARY AND SQLite3_FOUND)
      set(SOCI_sqlite3_FOUND TRUE)
    endif()
  elseif(_comp STREQUAL "postgresql")
    find_package(PostgreSQL QUIET)           # CMake >= 3.14: PostgreSQL::PostgreSQL
    if(SOCI_postgresql_LIBRARY AND PostgreSQL_FOUND)
      set(SOCI_postgresql_FOUND TRUE)
    endif()
  endif()
endforeach()

find_package_handle_standard_args(SOCI
  REQUIRED_VARS SOCI_core_LIBRARY SOCI_INCLUDE_DIR
  VERSION_VAR SOCI_VERSION
  HANDLE_COMPONENTS)

if(SOCI_FOUND)
  if(NOT TARGET SOCI::core)
    add_library(SOCI::core UNKNOWN IMPORTED)
    set_target_properties(SOCI::core PROPERTIES
      IMPORTED_LOCATION "${SOCI_core_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${SOCI_INCLUDE_DIR}")
  endif()
  if(SOCI_sqlite3_FOUND AND NOT TARGET SOCI::sqlite3)
    add_library(SOCI::sqlite3 UNKNOWN IMPORTED)
    set_target_properties(SOCI::sqlite3 PROPERTIES
      IMPORTED_LOCATION "${SOCI_sqlite3_LIBRARY}"
      INTERFACE_LINK_LIBRARIES "SOCI::core;SQLite::SQLite3")
  endif()
  if(SOCI_postgresql_FOUND AND NOT TARGET SOCI::postgresql)
    add_library(SOCI::postgresql UNKNOWN IMPORTED)
    set_target_properties(SOCI::postgresql PROPERTIES
      IMPORTED_LOCATION "${SOCI_postgresql_LIBRARY}"
      INTERFACE_LINK_LIBRARIES "SOCI::core;PostgreSQL::PostgreSQL")
  endif()
endif()
