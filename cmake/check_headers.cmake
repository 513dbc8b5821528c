# Compiles each of mproc's headers on its own with one compiler, warnings as errors:
# every header includes what it uses, and the library builds cleanly with both g++
# and clang (users have both).
#
#   cmake -DCXX=<compiler> -DINCLUDE_DIR=<repo>/include -DWORK_DIR=<dir>
#         [-DEXTRA_FLAGS=<;-list>] [-DSKIP_REGEX=<regex>] -P cmake/check_headers.cmake
foreach(var CXX INCLUDE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_headers.cmake: -D${var}=... is required")
  endif()
endforeach()
file(GLOB_RECURSE headers RELATIVE ${INCLUDE_DIR} ${INCLUDE_DIR}/mproc/*.hpp)
list(SORT headers)
file(MAKE_DIRECTORY ${WORK_DIR})
set(failed "")
set(checked 0)
foreach(header IN LISTS headers)
  if(NOT "${SKIP_REGEX}" STREQUAL "" AND header MATCHES "${SKIP_REGEX}")
    continue()
  endif()
  string(MAKE_C_IDENTIFIER ${header} stem)
  set(source ${WORK_DIR}/${stem}.cpp)
  file(WRITE ${source} "#include <${header}>\n")
  execute_process(
    COMMAND ${CXX} -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror -I${INCLUDE_DIR} ${EXTRA_FLAGS} ${source}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  math(EXPR checked "${checked} + 1")
  if(NOT rc EQUAL 0)
    message("${header}:\n${out}")
    list(APPEND failed ${header})
  endif()
endforeach()
if(failed)
  message(FATAL_ERROR "check_headers.cmake: ${CXX} could not compile on their own: ${failed}")
endif()
message(STATUS "${checked} headers compile on their own with ${CXX}")
