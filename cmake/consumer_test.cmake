# Configure, build and run a small project that consumes mproc (see
# tests/cmake/), in a fresh binary directory, with the main build's compiler.
#
#   cmake -DSOURCE_DIR=<consumer source> -DBINARY_DIR=<scratch dir>
#         -DGENERATOR=<generator> [-DMAKE_PROGRAM=<path>]
#         -DCXX_COMPILER=<path> [-DCONFIG=<build type>] -DEXPECT=<regex>
#         -P consumer_test.cmake [-- <extra configure arguments>...]
#
# The consumer must build an executable named `consumer`; it has to exit with 0
# and print something matching EXPECT.

# mproc_run_and_check(), mproc_args_after_separator()
include(${CMAKE_CURRENT_LIST_DIR}/run_and_check.cmake)

foreach(var SOURCE_DIR BINARY_DIR GENERATOR CXX_COMPILER EXPECT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "consumer_test.cmake: -D${var}=... is required")
  endif()
endforeach()

mproc_args_after_separator(extra_args)

set(configure ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR} -G ${GENERATOR}
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
set(build ${CMAKE_COMMAND} --build ${BINARY_DIR})
if(MAKE_PROGRAM)
  list(APPEND configure -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(CONFIG)
  list(APPEND configure -DCMAKE_BUILD_TYPE=${CONFIG})
  list(APPEND build --config ${CONFIG})
endif()

file(REMOVE_RECURSE ${BINARY_DIR})
mproc_run_and_check(COMMAND ${configure} ${extra_args} QUIET)
mproc_run_and_check(COMMAND ${build} QUIET)

# Single-config generators put the executable at the top, multi-config ones
# in a per-configuration subdirectory.
set(exe ${BINARY_DIR}/consumer)
if(NOT EXISTS ${exe})
  set(exe ${BINARY_DIR}/${CONFIG}/consumer)
endif()
mproc_run_and_check(COMMAND ${exe} EXPECT "${EXPECT}")
