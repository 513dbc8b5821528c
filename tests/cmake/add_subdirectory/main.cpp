// Smallest program using mproc: proves the headers and the mproc::mproc
// target work from a consumer project.
#include <mproc/mproc.hpp>

#include <iostream>

int main() {
    std::cout << "consumer ok\n";
    return 0;
}
