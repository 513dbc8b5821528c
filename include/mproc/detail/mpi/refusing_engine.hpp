#pragma once
// RefusingEngine: the engine of an mpi::Pool on a rank that served the master's
// tasks inside the constructor. Only the master submits, so every submission throws
// ValueError with the reason; close, join and terminate have nothing left to stop
// (join still asks for close() or terminate() first, as on any pool).

#include <mproc/detail/engine/engine.hpp>
#include <mproc/errors.hpp>

#include <string>
#include <utility>

namespace mproc::detail {

class RefusingEngine final : public Engine {
 public:
  RefusingEngine(std::string why, std::size_t workers) : why_(std::move(why)), workers_(workers) {}

  std::size_t workers() const noexcept override { return workers_; }
  void submit(std::shared_ptr<Job> /*job*/, bool /*awaited*/) override { throw ValueError(why_); }
  void open_stream(std::shared_ptr<Job> /*job*/) override { throw ValueError(why_); }
  std::size_t stream_room(const Job& /*job*/, const StreamFeed& /*feed*/) override { return 0; }
  bool append_input(const std::shared_ptr<Job>& /*job*/, Bytes /*bytes*/, std::vector<std::size_t> /*offsets*/,
                    std::size_t /*n*/, bool /*last*/) override {
    return false;
  }
  void cancel(const std::shared_ptr<Job>& /*job*/) noexcept override {}
  void close() override { closed_ = true; }
  void join() override {
    if (!closed_) throw_join_while_open();
  }
  void terminate() override { closed_ = true; }

 private:
  std::string why_;
  std::size_t workers_;
  bool closed_ = false;
};

}  // namespace mproc::detail
