#pragma once
// memfd files: the shared memory behind segments, Queue rings and Pool lanes. A memfd
// has no name in any file system and its size costs nothing: only the pages written
// hold memory, and punching a hole gives them back, in every process at once. Each
// process maps only the part it uses, so a big file costs no address space (which
// `ulimit -v`, RLIMIT_AS, counts) until something is put in it.

#include <mproc/detail/os/fd.hpp>
#include <mproc/errors.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <optional>
#include <string>

namespace mproc::detail {

inline std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

inline std::size_t page_round_up(std::size_t n) noexcept { return (n + page_size() - 1) / page_size() * page_size(); }

/// Deleter of a mapping of `bytes` bytes.
struct Unmap {
  std::size_t bytes = 0;
  void operator()(std::byte* p) const noexcept { ::munmap(p, bytes); }
};

/// The error for a descriptor that `call` could not get because a limit on open
/// files was reached (EMFILE, ENFILE): it names the limit and how to raise it.
inline OSError descriptor_limit_error(const char* call, int err) {
  std::string what = "mproc: no descriptor left for shared memory: ";
  if (err == EMFILE) {
    rlimit limit{};
    (void)::getrlimit(RLIMIT_NOFILE, &limit);
    what += "this process has reached its limit of " + std::to_string(limit.rlim_cur) +
            " open files (EMFILE, RLIMIT_NOFILE; raise it with `ulimit -n` before starting the program, or with "
            "setrlimit(RLIMIT_NOFILE) in it)";
  } else {
    what += "the system-wide limit of open files is reached (ENFILE, fs.file-max)";
  }
  return OSError(what + ". " + call, err);
}

/// The file-size limit of this process (RLIMIT_FSIZE, `ulimit -f`) in bytes, if one is
/// set. A memfd is a file: growing one past the limit (ftruncate, fallocate) makes the
/// kernel send SIGXFSZ, whose default action ends the program, so every growth of a
/// memfd is checked against it first (check_file_size).
inline std::optional<std::size_t> file_size_limit() noexcept {
  rlimit limit{};
  if (::getrlimit(RLIMIT_FSIZE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return std::nullopt;
  return static_cast<std::size_t>(limit.rlim_cur);
}

/// Throws OSError (EFBIG, as Python's OSError for a file written past the limit)
/// naming RLIMIT_FSIZE if `call` would make a memfd `bytes` long, past the file-size
/// limit, instead of letting the kernel end the program with SIGXFSZ. `limit`: the
/// file_size_limit() the caller read already.
inline void check_file_size(const char* call, std::size_t bytes, std::optional<std::size_t> limit = file_size_limit()) {
  if (!limit || bytes <= *limit) return;
  throw OSError("mproc: shared memory of " + std::to_string(bytes) +
                    " bytes is a file bigger than this process's "
                    "file-size limit of " +
                    std::to_string(*limit) +
                    " bytes (EFBIG, RLIMIT_FSIZE; raise it with "
                    "`ulimit -f` before starting the program, or with setrlimit(RLIMIT_FSIZE) in it). " +
                    call,
                EFBIG);
}

/// A new memfd of `size` bytes, all of it a hole (no memory yet). Close-on-exec, and
/// inherited by every child forked while it is open. OSError (EFBIG) if `size` is past
/// the file-size limit (see check_file_size).
inline Fd make_memfd(const char* name, std::size_t size) {
  if (size != 0) check_file_size("ftruncate(memfd)", size);
  Fd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd && (errno == EMFILE || errno == ENFILE)) throw descriptor_limit_error("memfd_create", errno);
  if (!fd) throw OSError("memfd_create", errno);
  if (size != 0 && ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw OSError("ftruncate(memfd)", errno);
  return fd;
}

/// Gives back the memory of the whole pages inside [offset, offset + length) of a
/// memfd, in every process; they read as zeros afterwards. Best effort.
inline void punch_hole(int fd, std::size_t offset, std::size_t length) noexcept {
  const std::size_t first = page_round_up(offset);
  const std::size_t last = (offset + length) / page_size() * page_size();
  if (last > first) {
    (void)::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(first),
                      static_cast<off_t>(last - first));
  }
}

/// Maps [offset, offset + size) of a memfd, shared and read-write; nullptr if this
/// process has no address space left for it (ENOMEM: RLIMIT_AS, or vm.max_map_count).
inline std::byte* map_memfd(int fd, std::size_t offset, std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, static_cast<off_t>(offset));
  if (p != MAP_FAILED) return static_cast<std::byte*>(p);
  if (errno == ENOMEM) return nullptr;
  throw OSError("mmap(memfd)", errno);
}

/// The address-space limit of this process (RLIMIT_AS, `ulimit -v`) in bytes, if
/// one is set.
inline std::optional<std::size_t> address_space_limit() noexcept {
  rlimit limit{};
  if (::getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return std::nullopt;
  return static_cast<std::size_t>(limit.rlim_cur);
}

/// For error messages: "is N bytes" or "is not set".
inline std::string address_space_limit_text() {
  const auto limit = address_space_limit();
  return limit ? "is " + std::to_string(*limit) + " bytes" : "is not set";
}

}  // namespace mproc::detail
