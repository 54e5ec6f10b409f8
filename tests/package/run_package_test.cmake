# Package test of libaise, run by CTest as
#   cmake -DAISE_BINARY_DIR=... -DCONSUMER_SOURCE_DIR=... -DWORK_DIR=... \
#         -DGENERATOR=... [-DAISE_CONFIG=...] [-DAISE_VERSION=...] \
#         [-DCXX_COMPILER=...] [-DCXX_FLAGS=...] [-DAISE_WITH_SQL=ON]
#         [-DAISE_WITH_RABBITMQ=ON] -P run_package_test.cmake
#
# 1. installs the build in AISE_BINARY_DIR into WORK_DIR/prefix;
# 2. configures, builds and runs the consumer against that prefix;
# 3. does the same against the build tree's export (aise_DIR=AISE_BINARY_DIR);
# 4. checks that find_package(aise COMPONENTS nosuch) fails at configure time
#    and names the missing component.
# Any failure stops the script with a fatal error, which fails the test.
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS AISE_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT ${var})
    message(FATAL_ERROR "run_package_test.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix "${WORK_DIR}/prefix")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(config_args "")
set(build_type_args "")
if(AISE_CONFIG)
  set(config_args --config "${AISE_CONFIG}")
  set(build_type_args "-DCMAKE_BUILD_TYPE=${AISE_CONFIG}")
endif()
set(consumer_args -G "${GENERATOR}" ${build_type_args} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(CXX_COMPILER)
  list(APPEND consumer_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(CXX_FLAGS)
  # The library was built with sanitizers: the consumer must link them too.
  list(APPEND consumer_args "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${CXX_FLAGS}")
endif()

# run(<step> <command>...): runs the command, fails the test unless it exits 0;
# leaves its combined output in `output`.
function(run step)
  message(STATUS "package test: ${step}")
  execute_process(
    COMMAND ${ARGN}
    RESULT_VARIABLE result
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out)
  if(NOT result EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "package test: ${step} failed (${result})\ncommand: ${command}\n${out}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

# consumer(<name> <extra cmake args>...): configures, builds and runs one
# consumer build in WORK_DIR/<name>; checks where aise came from and what
# the program prints.
function(consumer name expected_dir)
  set(dir "${WORK_DIR}/${name}")
  run("${name}: configure" "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${dir}" ${consumer_args} ${ARGN})
  string(FIND "${output}" "found aise ${AISE_VERSION} in ${expected_dir}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "package test: ${name}: aise ${AISE_VERSION} was not found in ${expected_dir}:\n${output}")
  endif()
  run("${name}: build" "${CMAKE_COMMAND}" --build "${dir}" ${config_args})
  file(GLOB_RECURSE exe LIST_DIRECTORIES false "${dir}/aise_consumer" "${dir}/aise_consumer.exe")
  if(NOT exe)
    message(FATAL_ERROR "package test: ${name}: no aise_consumer executable in ${dir}")
  endif()
  list(GET exe 0 exe)
  run("${name}: run" "${exe}")
  if(AISE_VERSION AND NOT output MATCHES "^${AISE_VERSION} x\n")
    message(FATAL_ERROR "package test: ${name}: unexpected output: ${output}")
  endif()
  if(name MATCHES "sql$" AND NOT output MATCHES "sql sqlite ok")
    message(FATAL_ERROR "package test: ${name}: the aise::sql check did not pass: ${output}")
  endif()
  if(name MATCHES "rabbitmq$" AND NOT output MATCHES "rabbitmq unavailable ok")
    message(FATAL_ERROR "package test: ${name}: the aise::rabbitmq check did not pass: ${output}")
  endif()
endfunction()

run("install into ${prefix}" "${CMAKE_COMMAND}" --install "${AISE_BINARY_DIR}" --prefix "${prefix}" ${config_args})
foreach(file IN ITEMS include/aise/version.hpp include/aise/core_export.hpp include/aise/error.hpp)
  if(NOT EXISTS "${prefix}/${file}")
    message(FATAL_ERROR "package test: ${file} was not installed")
  endif()
endforeach()

consumer(installed "${prefix}/" "-DCMAKE_PREFIX_PATH=${prefix}")
consumer(build-tree "${AISE_BINARY_DIR}" "-Daise_DIR=${AISE_BINARY_DIR}")
if(AISE_WITH_SQL)
  # aise::sql from the installed package: FindSOCI.cmake travels with it.
  consumer(installed-sql "${prefix}/" "-DCMAKE_PREFIX_PATH=${prefix}" "-DAISE_CONSUMER_COMPONENTS=core,sql")
endif()
if(AISE_WITH_RABBITMQ)
  # aise::rabbitmq from the installed package: rabbitmq-c is found again.
  consumer(installed-rabbitmq "${prefix}/" "-DCMAKE_PREFIX_PATH=${prefix}" "-DAISE_CONSUMER_COMPONENTS=core,rabbitmq")
endif()

# A component that does not exist must fail the configure, naming it.
set(dir "${WORK_DIR}/nosuch")
message(STATUS "package test: nosuch: configure (must fail)")
execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${dir}" ${consumer_args}
          "-DCMAKE_PREFIX_PATH=${prefix}" -DAISE_CONSUMER_COMPONENTS=nosuch
  RESULT_VARIABLE result
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(result EQUAL 0)
  message(FATAL_ERROR "package test: find_package(aise COMPONENTS nosuch) succeeded:\n${out}")
endif()
if(NOT out MATCHES "component\\(s\\) \\[nosuch\\]")
  message(FATAL_ERROR "package test: the nosuch failure does not name the missing component:\n${out}")
endif()

message(STATUS "package test: passed")
