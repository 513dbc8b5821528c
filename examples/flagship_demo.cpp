// The classic "serial vs Pool" benchmark (5.1 s vs 0.15 s in Python): map cube over
// range(N), once in a plain loop and once with a Pool of one worker per core, then
// compare the times and the results. The demo is in flagship_demo.hpp, written once
// for any pool type: this program runs it on mproc::Pool, flagship_demo_mpi.cpp on
// the Pool over MPI.
//
//   flagship_demo         the full run (a few seconds serially)
//   flagship_demo 0.2     a fifth of the work
#include "flagship_demo.hpp"

int main(int argc, char** argv) { return run_flagship_demo<mproc::Pool>(argc, argv); }
