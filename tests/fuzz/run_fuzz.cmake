# Builds the fuzz target with clang and runs it for a while:
#
#   cmake -DBINARY_DIR=<dir> -DCXX=<clang++> -DSECONDS=<n> [-DJOBS=<n>] -P tests/fuzz/run_fuzz.cmake
#
# Configures tests/fuzz/ in BINARY_DIR (once), builds fuzz_decode, and runs it for
# SECONDS on a working corpus (BINARY_DIR/corpus, where libFuzzer keeps the inputs it
# finds) started from the seeds in tests/fuzz/seeds/. A crash, a leak, an exception
# other than mproc::ProtocolError, or an allocation past -malloc_limit_mb fails the
# run, and the input that did it is left as BINARY_DIR/crash-* (or leak-*, oom-*).
foreach(var BINARY_DIR CXX SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzz.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED JOBS)
  set(JOBS 2)
endif()
set(source_dir ${CMAKE_CURRENT_LIST_DIR})

if(NOT EXISTS ${BINARY_DIR}/CMakeCache.txt)
  execute_process(
    COMMAND ${CMAKE_COMMAND} -S ${source_dir} -B ${BINARY_DIR} -DCMAKE_CXX_COMPILER=${CXX}
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    file(REMOVE ${BINARY_DIR}/CMakeCache.txt)  # configure again next time
    message(FATAL_ERROR "run_fuzz.cmake: configuring the fuzz target failed")
  endif()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} --parallel ${JOBS} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "run_fuzz.cmake: building the fuzz target failed")
endif()

file(MAKE_DIRECTORY ${BINARY_DIR}/corpus)
# -rss_limit_mb and -malloc_limit_mb: a decoder that allocates far beyond its input
# (trusting a length it read) is a finding, not just a slow run.
execute_process(
  COMMAND ${BINARY_DIR}/fuzz_decode
    -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256
    -print_final_stats=1 -artifact_prefix=${BINARY_DIR}/
    ${BINARY_DIR}/corpus ${source_dir}/seeds
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "run_fuzz.cmake: fuzz_decode found a problem (exit ${rc}); see the input saved in ${BINARY_DIR}")
endif()
message(STATUS "fuzz_decode: ${SECONDS} s, no finding")
