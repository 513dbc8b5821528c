# Run a command and check its exit status and output.
#
# As a script (this is what ctest runs):
#   cmake [-DEXPECT=<regex>] [-DEXPECT_FAILURE=ON] [-DTIMEOUT=<seconds>]
#         -P run_and_check.cmake -- <command> [args...]
#
# From another script, after include():
#   mproc_run_and_check(COMMAND <command> [args...] [EXPECT <regex>]
#                       [EXPECT_FAILURE] [TIMEOUT <seconds>] [QUIET])
#
# Fails (with the complete stdout+stderr of the command) unless
#   - the command exits with 0, or with EXPECT_FAILURE: does not exit with 0;
#   - the combined stdout+stderr matches EXPECT, if given.
# On success the output is echoed unless QUIET, so `ctest -V` shows it.
# ctest's PASS_REGULAR_EXPRESSION is not used because it ignores the exit code.

function(mproc_run_and_check)
  cmake_parse_arguments(PARSE_ARGV 0 arg "EXPECT_FAILURE;QUIET" "EXPECT;TIMEOUT" "COMMAND")
  if("${arg_COMMAND}" STREQUAL "")
    message(FATAL_ERROR "mproc_run_and_check: no COMMAND given")
  endif()
  set(timeout_args)
  if(arg_TIMEOUT)
    set(timeout_args TIMEOUT ${arg_TIMEOUT})
  endif()

  # Same variable for both streams: CMake merges them in the order produced.
  execute_process(COMMAND ${arg_COMMAND}
    ${timeout_args}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out)

  list(JOIN arg_COMMAND " " cmdline)
  set(problem)
  if(arg_EXPECT_FAILURE AND rc STREQUAL "0")
    set(problem "succeeded, but was expected to fail")
  elseif(NOT arg_EXPECT_FAILURE AND NOT rc STREQUAL "0")
    set(problem "failed: ${rc}")  # an exit code, or e.g. a timeout/signal message
  elseif(NOT "${arg_EXPECT}" STREQUAL "" AND NOT out MATCHES "${arg_EXPECT}")
    set(problem "output does not match the regex\n  ${arg_EXPECT}")
  endif()

  if(NOT "${problem}" STREQUAL "")
    message(FATAL_ERROR
      "Command ${problem}\n  ${cmdline}\n"
      "---- output ----\n${out}---- end of output ----")
  endif()
  if(NOT arg_QUIET)
    message("${out}")
  endif()
endfunction()

# Sets <out_var> to the script-mode arguments that follow "--"
# (cmake -P <script> -- <args>...). Also used by consumer_test.cmake.
function(mproc_args_after_separator out_var)
  set(args)
  set(after_separator FALSE)
  math(EXPR last "${CMAKE_ARGC} - 1")
  foreach(i RANGE ${last})
    if(after_separator)
      # Escape ';' so that an argument containing one stays one argument.
      string(REPLACE ";" "\\;" arg "${CMAKE_ARGV${i}}")
      list(APPEND args "${arg}")
    elseif("${CMAKE_ARGV${i}}" STREQUAL "--")
      set(after_separator TRUE)
    endif()
  endforeach()
  set(${out_var} "${args}" PARENT_SCOPE)
endfunction()

# Script mode: everything after "--" is the command.
if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  mproc_args_after_separator(_command)
  set(_expect_failure)
  if(EXPECT_FAILURE)
    set(_expect_failure EXPECT_FAILURE)
  endif()
  # Quoted, so a regex containing ';' stays one argument.
  mproc_run_and_check(COMMAND ${_command} ${_expect_failure}
    EXPECT "${EXPECT}" TIMEOUT "${TIMEOUT}")
endif()
