#pragma once
// mproc: Python's multiprocessing for C++. Include this one header for everything.

#include <mproc/async_result.hpp>
#include <mproc/codec.hpp>
#include <mproc/cpu_count.hpp>
#include <mproc/current_process.hpp>
#include <mproc/errors.hpp>
#include <mproc/imap.hpp>
#include <mproc/logging.hpp>
#include <mproc/manager.hpp>
#include <mproc/pipe.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>
