# Helpers that create libaise's own targets. Included by the top-level
# CMakeLists.txt; every library component is made with aise_add_component().

include_guard(GLOBAL)
include(GenerateExportHeader)
include(GNUInstallDirs)

# aise_target_warnings(<target>)
#
# Turns on libaise's warning set for <target> (PRIVATE: never propagated to
# consumers), and -Werror when AISE_WERROR is ON. Use it on every target
# libaise builds: components (done by aise_add_component), tests, examples,
# benchmarks, executables.
function(aise_target_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive- $<$<BOOL:${AISE_WERROR}>:/WX>)
  else()
    target_compile_options(
      ${target}
      PRIVATE -Wall
              -Wextra
              -Wpedantic
              -Wnon-virtual-dtor
              -Woverloaded-virtual
              $<$<BOOL:${AISE_WERROR}>:-Werror>)
    # GCC (12 here) warns (-Wextra) about members left out of a C++20
    # designated initializer even when they have default member
    # initializers, which is how options structs are meant to be filled
    # in: `rt.spawn<agent>({.name = "a"})`. Clang does not.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${target} PRIVATE -Wno-missing-field-initializers)
      # GCC 12 at -O3 reports impossible -Wrestrict overlaps inside
      # std::string's own code (GCC bug 105651, fixed in GCC 13).
      if(CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
        target_compile_options(${target} PRIVATE -Wno-restrict)
      endif()
    endif()
  endif()
endfunction()

# aise_add_component(NAME <name>
#                    SOURCES <file>...
#                    [PUBLIC_DEPS <target>...]
#                    [PRIVATE_DEPS <target>...]
#                    [FIND_DEPENDENCIES "<package> [find_package args]"...]
#                    [FIND_MODULES <Find*.cmake>...])
#
# Creates the library aise_<name> with the alias aise::<name>:
# - static unless BUILD_SHARED_LIBS is ON; position-independent code, hidden
#   symbol visibility (only what is marked AISE_<NAME>_EXPORT is exported
#   from a shared library);
# - generates <build>/include/aise/<name>_export.hpp, defining
#   AISE_<NAME>_EXPORT, AISE_<NAME>_NO_EXPORT and AISE_<NAME>_DEPRECATED;
#   include it as <aise/<name>_export.hpp>;
# - public include directories: the source tree's include/ and the build's
#   generated include/ (installed: <prefix>/include);
# - requires C++20 of itself and of its consumers;
# - is installed into the export set aiseTargets (when AISE_INSTALL is ON)
#   and so becomes the component <name> of find_package(aise).
#
# FIND_DEPENDENCIES lists the packages a consumer of the *installed* component
# must find: each entry becomes find_dependency(<entry>) in aiseConfig.cmake,
# run only when the component is asked for. A static library's PRIVATE_DEPS
# belong there too (they are on the consumer's link line). FIND_MODULES are
# Find<Package>.cmake files for dependencies that ship no CMake package;
# they are installed beside aiseConfig.cmake, which puts them on the module
# path while it finds the dependencies.
function(aise_add_component)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "NAME"
                        "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS;FIND_DEPENDENCIES;FIND_MODULES")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "aise_add_component: unknown arguments: ${arg_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT arg_NAME MATCHES "^[a-z][a-z0-9_]*$")
    message(FATAL_ERROR "aise_add_component: NAME must be lower-case snake_case, got \"${arg_NAME}\"")
  endif()
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "aise_add_component(${arg_NAME}): SOURCES is empty")
  endif()

  set(name ${arg_NAME})
  set(target aise_${name})
  string(TOUPPER "${name}" upper)
  set(generated_include_dir "${AISE_GENERATED_INCLUDE_DIR}") # set by the top-level CMakeLists.txt
  set(export_header "${generated_include_dir}/aise/${name}_export.hpp")

  add_library(${target} ${arg_SOURCES})
  add_library(aise::${name} ALIAS ${target})

  set_target_properties(
    ${target}
    PROPERTIES EXPORT_NAME ${name}
               OUTPUT_NAME aise_${name}
               CXX_VISIBILITY_PRESET hidden
               VISIBILITY_INLINES_HIDDEN ON
               POSITION_INDEPENDENT_CODE ON
               VERSION ${PROJECT_VERSION}
               SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})

  generate_export_header(
    ${target}
    BASE_NAME aise_${name}
    EXPORT_MACRO_NAME AISE_${upper}_EXPORT
    NO_EXPORT_MACRO_NAME AISE_${upper}_NO_EXPORT
    DEPRECATED_MACRO_NAME AISE_${upper}_DEPRECATED
    STATIC_DEFINE AISE_${upper}_STATIC_DEFINE
    INCLUDE_GUARD_NAME AISE_${upper}_EXPORT_HPP
    EXPORT_FILE_NAME "${export_header}")

  # A static library's consumers must see the export macro as empty (on
  # Windows it would otherwise turn into dllimport).
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "STATIC_LIBRARY")
    target_compile_definitions(${target} PUBLIC AISE_${upper}_STATIC_DEFINE)
  endif()

  target_include_directories(
    ${target}
    PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
           $<BUILD_INTERFACE:${generated_include_dir}>
           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_link_libraries(
    ${target}
    PUBLIC ${arg_PUBLIC_DEPS}
    PRIVATE ${arg_PRIVATE_DEPS})
  aise_target_warnings(${target})

  set_property(GLOBAL APPEND PROPERTY AISE_COMPONENTS ${name})
  foreach(dependency IN LISTS arg_FIND_DEPENDENCIES)
    set_property(GLOBAL APPEND PROPERTY AISE_COMPONENT_DEPENDENCIES
                                        "_aise_component_dependency(${name} ${dependency})")
  endforeach()

  if(AISE_INSTALL)
    install(
      TARGETS ${target}
      EXPORT aiseTargets
      RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT aise_runtime
      LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT aise_runtime
              NAMELINK_COMPONENT aise_development
      ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT aise_development)
    install(
      FILES "${export_header}"
      DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/aise
      COMPONENT aise_development)
    if(arg_FIND_MODULES)
      install(
        FILES ${arg_FIND_MODULES}
        DESTINATION ${AISE_INSTALL_CMAKEDIR}/modules
        COMPONENT aise_development)
    endif()
  endif()
endfunction()
