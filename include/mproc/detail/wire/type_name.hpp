#pragma once
// Readable type names for error messages: demangled typeid names, and what the
// exception being handled is.

#include <cxxabi.h>

#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <typeinfo>

namespace mproc::detail {

inline std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}

template <class T>
std::string type_name() {
  return demangle(typeid(T).name());
}

/// The type and message of the exception being handled (call inside a catch block).
struct ExceptionInfo {
  std::string type;
  std::string message;
  /// "type: message", or the type alone when there is no message.
  std::string text() const { return message.empty() ? type : type + ": " + message; }
};
inline ExceptionInfo describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return {demangle(typeid(e).name()), e.what()};
  } catch (...) {
    const std::type_info* t = abi::__cxa_current_exception_type();
    return {t ? demangle(t->name()) : std::string("unknown exception"), ""};
  }
}

}  // namespace mproc::detail
