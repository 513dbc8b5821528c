// Catch2's main(), compiled once into mproc_catch_main and shared by all tests.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
