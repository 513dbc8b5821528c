// Default sanitizer options for mproc's own programs in a sanitizer build
// (-DMPROC_SANITIZE=...): CMake adds this file to every test, example and benchmark
// then, so ctest and a program run by hand behave alike. ASAN_OPTIONS and
// UBSAN_OPTIONS in the environment still override them.
//
// Forked children that leave with _exit (every worker and Process child) skip the
// leak check; the parent's runs at its exit.

extern "C" {

// Stop at the first error, with a stack trace, and check for leaks at exit.
__attribute__((used)) const char* __asan_default_options() {
  return "halt_on_error=1:print_stacktrace=1:detect_leaks=1";
}

__attribute__((used)) const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }

}  // extern "C"
